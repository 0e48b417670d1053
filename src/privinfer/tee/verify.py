"""Offline verification of a piece of evidence from files: read it and its certificates, build
the policy from allowlists (policy ANY where none is given, and say so), verify.

Security assumption: the vendor roots pinned in `evidence.x509chain` are the trust anchors
(unless `roots` replaces them). Without collateral an SGX/TDX quote is verified as far as it
can be (signature, chain, QE binding) and its TCB status is listed as not checked; with
collateral the TCB policy (allowed statuses, evaluation number) is enforced. Without measurements / signers the policy admits any value
(policy ANY) and the returned notes say so: the result then shows what the evidence proves, not
that it is the code you expect. Malformed input raises InputError; evidence that fails any stage
raises `EvidenceRejected`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from privinfer.errors import InputError
from privinfer.tee.claims import Claims
from privinfer.tee.evidence.detect import verify_evidence
from privinfer.tee.policy import ANY, Policy


@dataclass
class Verified:
    """Claims of evidence that passed, the policy it passed, and notes on what the policy admits."""

    claims: Claims
    policy: Policy
    notes: list[str] = field(default_factory=list)


def read_file(path: str) -> bytes:
    """The bytes of `path`; InputError naming the file when it cannot be read."""
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from exc


def hex_set(values: Sequence[str], flag: str) -> frozenset[bytes]:
    """Hex strings as a set of bytes; InputError naming `flag` when one is not hex."""
    try:
        return frozenset(bytes.fromhex(v) for v in values)
    except ValueError as exc:
        raise InputError(f"{flag} must be hex") from exc


def parse_time(text: str | None, flag: str = "--at") -> datetime:
    """An ISO time (naive means UTC); now when `text` is None."""
    if text is None:
        return datetime.now(UTC)
    try:
        at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise InputError(f"{flag} {text!r} is not an ISO time") from exc
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def allowlist_policy(
    measurements: frozenset[bytes],
    signers: frozenset[bytes],
    *,
    allow_debug: bool,
    **tcb: object,
) -> tuple[Policy, list[str]]:
    """The policy of these allowlists (ANY where one is empty) and a note for each ANY; `tcb`
    are Policy's TCB fields (require_tcb, allowed_tcb_statuses, ...)."""
    notes: list[str] = []
    if not measurements:
        notes.append("no --measurement given: policy accepts ANY measurement")
    if not signers:
        notes.append("no --signer given: policy accepts ANY signer")
    policy = Policy(
        allowed_measurements=measurements or ANY,
        allowed_signers=signers or ANY,
        allow_debug=allow_debug,
        **tcb,  # type: ignore[arg-type]
    )
    return policy, notes


def verify_file(
    path: str,
    *,
    evidence_type: str | None = None,
    certs: Sequence[str] = (),
    at: str | None = None,
    allow_debug: bool = False,
    measurements: Sequence[str] = (),
    signers: Sequence[str] = (),
    report_data: str | None = None,
    roots: Sequence[str] = (),
    collateral: str | None = None,
    allow_tcb_status: Sequence[str] = (),
    min_tcb_eval: int = 0,
    allow_unknown_debug: bool = False,
) -> Verified:
    """Verify the evidence in `path`; every argument is as the user gave it (paths, hex, ISO).

    `collateral` is a DCAP collateral JSON file or a directory of them (picked by FMSPC). With
    it, the TCB statuses in `allow_tcb_status` (default UpToDate, SWHardeningNeeded) and
    evaluation numbers >= `min_tcb_eval` pass; without it the TCB is reported as not checked.

    Raises InputError for unreadable files or malformed values (before any verification) and
    `EvidenceRejected` when the evidence fails a stage.
    """
    evidence = read_file(path)
    coll = _collateral(evidence, collateral) if collateral else None
    tcb: dict[str, object] = {
        "require_tcb": coll is not None,
        "min_tcb_eval_number": min_tcb_eval,
        "allow_unknown_debug": allow_unknown_debug,
    }
    if allow_tcb_status:
        tcb["allowed_tcb_statuses"] = frozenset(allow_tcb_status)
    policy, notes = allowlist_policy(
        hex_set(measurements, "--measurement"),
        hex_set(signers, "--signer"),
        allow_debug=allow_debug,
        **tcb,
    )
    if coll is None:
        notes.append("no --collateral given: TCB status and PCK revocation not checked")
    kwargs: dict[str, object] = {
        "evidence_type": evidence_type,
        "certs": [read_file(p) for p in certs] or None,
        "at": parse_time(at),
        "policy": policy,
        "roots": [read_file(p) for p in roots] or None,
        "collateral": coll,
    }
    if report_data is not None:
        try:
            kwargs["expected_report_data"] = bytes.fromhex(report_data)
        except ValueError as exc:
            raise InputError("--report-data must be hex") from exc
    claims = verify_evidence(evidence, **kwargs)  # type: ignore[arg-type]
    return Verified(claims, policy, notes)


def _collateral(evidence: bytes, source: str) -> bytes:
    """The collateral for `evidence` from a file or a cache directory; InputError if none."""
    from pathlib import Path

    from privinfer.tee.evidence.collateral import collateral_for

    if not Path(source).exists():
        raise InputError(f"cannot read {source}: no such file or directory")
    found = collateral_for(evidence, source)
    if found is None:
        raise InputError(f"no collateral for this quote's platform in {source}")
    return found
