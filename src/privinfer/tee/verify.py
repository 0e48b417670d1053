"""Offline verification of a piece of evidence from files: read it and its certificates, build
the policy from allowlists (policy ANY where none is given, and say so), verify.

Security assumption: the vendor roots pinned in `evidence.x509chain` are the trust anchors
(unless `roots` replaces them). Without measurements / signers the policy admits any value
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
    measurements: frozenset[bytes], signers: frozenset[bytes], *, allow_debug: bool
) -> tuple[Policy, list[str]]:
    """The policy of these allowlists (ANY where one is empty) and a note for each ANY."""
    notes: list[str] = []
    if not measurements:
        notes.append("no --measurement given: policy accepts ANY measurement")
    if not signers:
        notes.append("no --signer given: policy accepts ANY signer")
    policy = Policy(
        allowed_measurements=measurements or ANY,
        allowed_signers=signers or ANY,
        allow_debug=allow_debug,
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
) -> Verified:
    """Verify the evidence in `path`; every argument is as the user gave it (paths, hex, ISO).

    Raises InputError for unreadable files or malformed values (before any verification) and
    `EvidenceRejected` when the evidence fails a stage.
    """
    policy, notes = allowlist_policy(
        hex_set(measurements, "--measurement"),
        hex_set(signers, "--signer"),
        allow_debug=allow_debug,
    )
    kwargs: dict[str, object] = {
        "evidence_type": evidence_type,
        "certs": [read_file(p) for p in certs] or None,
        "at": parse_time(at),
        "policy": policy,
        "roots": [read_file(p) for p in roots] or None,
        "collateral": read_file(collateral) if collateral else None,
    }
    if report_data is not None:
        try:
            kwargs["expected_report_data"] = bytes.fromhex(report_data)
        except ValueError as exc:
            raise InputError("--report-data must be hex") from exc
    evidence = read_file(path)
    claims = verify_evidence(evidence, **kwargs)  # type: ignore[arg-type]
    return Verified(claims, policy, notes)
