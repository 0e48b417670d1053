"""`privinfer tee verify`: check evidence offline against pinned vendor roots; flags policy ANY.

Security assumption: the vendor roots pinned in `evidence.x509chain` are the trust anchors
(unless --root replaces them). Without --measurement / --signer the tool admits any value
(policy ANY) and says so in its output: it then shows what the evidence proves, not that it is
the code you expect.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime

from privinfer.tee.claims import Claims, EvidenceRejected
from privinfer.tee.evidence.detect import EVIDENCE_TYPES, verify_evidence
from privinfer.tee.policy import ANY, Policy


def add_verify_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the arguments of `privinfer tee verify` to `parser`."""
    parser.add_argument(
        "file", help="evidence file: SGX/TDX quote, SNP report, NVIDIA SPDM report (binary or hex)"
    )
    parser.add_argument(
        "--certs",
        nargs="+",
        action="extend",
        default=[],
        metavar="PEM_OR_DER",
        help="certificates the evidence does not carry (SNP: VCEK, ASK+ARK; NVIDIA: device chain)",
    )
    parser.add_argument(
        "--type", choices=EVIDENCE_TYPES, default=None, help="evidence type (default: detect)"
    )
    parser.add_argument(
        "--at",
        default=None,
        metavar="ISO-TIME",
        help="check certificate validity at this time (default: now)",
    )
    parser.add_argument(
        "--allow-debug",
        action="store_true",
        help="accept debug-mode enclaves/VMs (never in production)",
    )
    parser.add_argument(
        "--measurement",
        nargs="+",
        action="extend",
        default=[],
        metavar="HEX",
        help="allowed measurement(s); without it any measurement is accepted",
    )
    parser.add_argument(
        "--signer",
        nargs="+",
        action="extend",
        default=[],
        metavar="HEX",
        help="allowed signer(s); without it any signer is accepted",
    )
    parser.add_argument(
        "--report-data", default=None, metavar="HEX", help="expected report_data (or NVIDIA nonce)"
    )
    parser.add_argument(
        "--root",
        nargs="+",
        action="extend",
        default=[],
        metavar="PEM_OR_DER",
        help="pin these root certificates instead of the built-in vendor root",
    )
    parser.add_argument(
        "--collateral", default=None, metavar="JSON", help="Intel DCAP collateral JSON (SGX only)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")


class _UsageError(Exception):
    pass


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise _UsageError(f"cannot read {path}: {exc.strerror}") from exc


def _hex_set(values: list[str], what: str) -> frozenset[bytes]:
    try:
        return frozenset(bytes.fromhex(v) for v in values)
    except ValueError as exc:
        raise _UsageError(f"{what} must be hex") from exc


def _when(text: str | None) -> datetime:
    if text is None:
        return datetime.now(UTC)
    try:
        at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise _UsageError(f"--at {text!r} is not an ISO time") from exc
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def _build(args: argparse.Namespace) -> tuple[Policy, list[str], dict[str, object]]:
    notes: list[str] = []
    measurements = _hex_set(args.measurement, "--measurement")
    signers = _hex_set(args.signer, "--signer")
    if not measurements:
        notes.append("no --measurement given: policy accepts ANY measurement")
    if not signers:
        notes.append("no --signer given: policy accepts ANY signer")
    policy = Policy(
        allowed_measurements=measurements or ANY,
        allowed_signers=signers or ANY,
        allow_debug=args.allow_debug,
    )
    kwargs: dict[str, object] = {
        "evidence_type": args.type,
        "certs": [_read(p) for p in args.certs] or None,
        "at": _when(args.at),
        "policy": policy,
        "roots": [_read(p) for p in args.root] or None,
        "collateral": _read(args.collateral) if args.collateral else None,
    }
    if args.report_data is not None:
        try:
            kwargs["expected_report_data"] = bytes.fromhex(args.report_data)
        except ValueError as exc:
            raise _UsageError("--report-data must be hex") from exc
    return policy, notes, kwargs


def _print_claims(claims: Claims, notes: list[str]) -> None:
    print(f"OK: {claims.evidence_type} evidence verified")
    for name in ("measurement", "signer", "report_data"):
        print(f"  {name}: {getattr(claims, name).hex() or '(none)'}")
    print(f"  product_id: {claims.product_id}  svn: {claims.svn}  debug: {claims.debug}")
    for k, v in claims.components.items():
        print(f"  component {k}: {v.hex()}")
    for k, v in claims.extra.items():
        print(f"  {k}: {v}")
    for line in claims.checked:
        print(f"  checked: {line}")
    for line in claims.not_checked:
        print(f"  NOT checked: {line}")
    for line in notes:
        print(f"  note: {line}")


def run_verify(args: argparse.Namespace) -> int:
    """Run `privinfer tee verify`; 0 when the evidence passes, 1 when rejected, 2 on usage errors."""
    try:
        policy, notes, kwargs = _build(args)
        claims = verify_evidence(_read(args.file), **kwargs)  # type: ignore[arg-type]
    except _UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except EvidenceRejected as exc:
        if args.json:
            print(
                json.dumps(
                    {
                        "ok": False,
                        "stage": exc.stage.value,
                        "reason": exc.reason.value,
                        "detail": exc.detail,
                    }
                )
            )
        else:
            print(f"REJECTED: {exc}")
        return 1
    if args.json:
        print(
            json.dumps(
                {
                    "ok": True,
                    "claims": claims.to_json(),
                    "policy": policy.describe(),
                    "notes": notes,
                }
            )
        )
    else:
        _print_claims(claims, notes)
    return 0
