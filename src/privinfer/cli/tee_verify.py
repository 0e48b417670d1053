"""`privinfer tee verify FILE`: check hardware or software evidence offline, against pinned roots
and (with collateral) the TCB policy; print the verified claims or the reason for a refusal
(exit 3, see `privinfer --help`).

Security assumption: nothing in the file is trusted until the verifier pipeline (chain ->
signature -> binding -> policy) accepts it; the roots are the client's, never the file's.
"""

from __future__ import annotations

import argparse
import json

from privinfer.cli.main import EXIT_REJECTED, EXIT_USAGE, error
from privinfer.errors import InputError
from privinfer.tee.claims import Claims, EvidenceRejected
from privinfer.tee.evidence.detect import EVIDENCE_TYPES


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
        help="certificates the evidence does not carry (SNP: VCEK, ASK+ARK; NVIDIA: device "
        "chain; default: none)",
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
        help="allowed measurement(s) (default: any measurement is accepted, and the output says so)",
    )
    parser.add_argument(
        "--signer",
        nargs="+",
        action="extend",
        default=[],
        metavar="HEX",
        help="allowed signer(s) (default: any signer is accepted, and the output says so)",
    )
    parser.add_argument(
        "--report-data",
        default=None,
        metavar="HEX",
        help="expected report_data or NVIDIA nonce (default: not checked)",
    )
    parser.add_argument(
        "--root",
        nargs="+",
        action="extend",
        default=[],
        metavar="PEM_OR_DER",
        help="pin these root certificates (default: the built-in vendor root)",
    )
    parser.add_argument(
        "--collateral",
        default=None,
        metavar="JSON_OR_DIR",
        help="Intel DCAP collateral JSON for SGX/TDX, or a directory of them picked by FMSPC; "
        "with it the TCB policy is enforced (default: none, TCB status not checked)",
    )
    parser.add_argument(
        "--allow-tcb-status",
        nargs="+",
        action="extend",
        default=[],
        metavar="STATUS",
        help="Intel TCB statuses to accept with --collateral (default: UpToDate "
        "SWHardeningNeeded; e.g. OutOfDate, ConfigurationNeeded)",
    )
    parser.add_argument(
        "--min-tcb-eval",
        type=int,
        default=0,
        metavar="N",
        help="lowest Intel tcbEvaluationDataNumber to accept with --collateral (default: 0)",
    )
    parser.add_argument(
        "--allow-unknown-debug",
        action="store_true",
        help="accept evidence that does not show its debug state (NVIDIA SPDM; default: refuse)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def _print_claims(claims: Claims, notes: list[str]) -> None:
    print(f"OK: {claims.evidence_type} evidence verified")
    for name in ("measurement", "signer", "report_data"):
        print(f"  {name}: {getattr(claims, name).hex() or '(none)'}")
    debug = "unknown" if claims.debug is None else claims.debug
    print(f"  product_id: {claims.product_id}  svn: {claims.svn}  debug: {debug}")
    if claims.evidence_type in ("sgx", "tdx") and "tcb_status" not in claims.extra:
        print("  tcb_status: not checked (no collateral)")
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
    """Run `privinfer tee verify`: 0 when the evidence passes, 3 when rejected (one line on
    stdout, or a JSON object), 2 on usage errors (one line on stderr)."""
    from privinfer.tee.verify import verify_file

    try:
        result = verify_file(
            args.file,
            evidence_type=args.type,
            certs=args.certs,
            at=args.at,
            allow_debug=args.allow_debug,
            measurements=args.measurement,
            signers=args.signer,
            report_data=args.report_data,
            roots=args.root,
            collateral=args.collateral,
            allow_tcb_status=args.allow_tcb_status,
            min_tcb_eval=args.min_tcb_eval,
            allow_unknown_debug=args.allow_unknown_debug,
        )
    except InputError as exc:
        error(str(exc))
        return EXIT_USAGE
    except EvidenceRejected as exc:
        if args.json:
            doc = {
                "ok": False,
                "stage": exc.stage.value,
                "reason": exc.reason.value,
                "detail": exc.detail,
            }
            print(json.dumps(doc))
        else:
            print(f"REJECTED: {exc}")
        return EXIT_REJECTED
    if args.json:
        doc = {
            "ok": True,
            "claims": result.claims.to_json(),
            "policy": result.policy.describe(),
            "notes": result.notes,
        }
        print(json.dumps(doc))
    else:
        _print_claims(result.claims, result.notes)
    return 0
