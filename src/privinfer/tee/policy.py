"""Appraisal policy for verified evidence: default-deny, every rejection named.

Security assumption: the policy is set by the relying party (the client). An empty allowlist
admits nothing; admitting any measurement or signer must be asked for explicitly
(`ANY`), and tools that do so say it in their output.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from datetime import UTC, datetime

from privinfer.tee.claims import Claims, EvidenceRejected, Reason, Stage


class _Any:
    """Marker: this field of the policy admits every value (must be chosen explicitly)."""

    def __repr__(self) -> str:
        return "ANY"


ANY = _Any()


@dataclass(frozen=True)
class Policy:
    """What a relying party accepts. Defaults deny: no measurement, no signer, no debug."""

    allowed_measurements: frozenset[bytes] | _Any = frozenset()
    allowed_signers: frozenset[bytes] | _Any = frozenset()
    allowed_product_ids: frozenset[int] | _Any = ANY
    min_svn: int = 0
    allow_debug: bool = False
    max_age_s: float | None = 300.0
    notes: tuple[str, ...] = field(default_factory=tuple)

    def describe(self) -> dict[str, object]:
        def show(v: object) -> object:
            if v is ANY:
                return "any"
            if isinstance(v, frozenset):
                return sorted(x.hex() if isinstance(x, bytes) else x for x in v)
            return v

        return {
            "allowed_measurements": show(self.allowed_measurements),
            "allowed_signers": show(self.allowed_signers),
            "allowed_product_ids": show(self.allowed_product_ids),
            "min_svn": self.min_svn,
            "allow_debug": self.allow_debug,
            "max_age_s": self.max_age_s,
        }


def _member(value: bytes, allowed: frozenset[bytes] | _Any) -> bool:
    if allowed is ANY:
        return True
    return any(hmac.compare_digest(value, a) for a in allowed)  # type: ignore[union-attr]


def check_binding(claims: Claims, expected_report_data: bytes) -> None:
    """Stage 3: the quote's 64-byte report_data must equal what the verifier recomputed."""
    got = claims.report_data
    want = (
        expected_report_data.ljust(len(got), b"\0")
        if len(expected_report_data) < len(got)
        else expected_report_data
    )
    if not hmac.compare_digest(got, want):
        raise EvidenceRejected(Stage.BINDING, Reason.REPORT_DATA_MISMATCH)


def check_policy(claims: Claims, policy: Policy, *, now: datetime | None = None) -> None:
    """Stage 4: apply `policy` to verified `claims`; raise EvidenceRejected naming the rule."""
    now = now or datetime.now(UTC)
    if claims.debug and not policy.allow_debug:
        raise EvidenceRejected(Stage.POLICY, Reason.DEBUG_ENABLED)
    if not _member(claims.measurement, policy.allowed_measurements):
        raise EvidenceRejected(
            Stage.POLICY, Reason.MEASUREMENT_NOT_ALLOWED, claims.measurement.hex()[:16]
        )
    if not _member(claims.signer, policy.allowed_signers):
        raise EvidenceRejected(Stage.POLICY, Reason.SIGNER_NOT_ALLOWED, claims.signer.hex()[:16])
    if (
        policy.allowed_product_ids is not ANY
        and claims.product_id not in policy.allowed_product_ids
    ):  # type: ignore[operator]
        raise EvidenceRejected(Stage.POLICY, Reason.PRODUCT_NOT_ALLOWED, str(claims.product_id))
    if claims.svn < policy.min_svn:
        raise EvidenceRejected(Stage.POLICY, Reason.SVN_TOO_LOW, f"{claims.svn} < {policy.min_svn}")
    if policy.max_age_s is not None and claims.issued_at is not None:
        age = (now - claims.issued_at).total_seconds()
        if age > policy.max_age_s or age < -60:
            raise EvidenceRejected(Stage.POLICY, Reason.TOO_OLD, f"age {age:.0f} s")
    claims.checked.append("policy: " + ", ".join(f"{k}={v}" for k, v in policy.describe().items()))
