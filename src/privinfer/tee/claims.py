"""Shared types of the TEE verifier pipeline: verified claims and named rejections.

Every verifier (software platform, SGX, TDX, SEV-SNP, NVIDIA) runs the same four stages:
certificate chain to a pinned root (at a given time) -> signature -> report_data binding -> policy,
and returns `Claims` or raises `EvidenceRejected` naming the stage and reason.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime

from privinfer.errors import SecurityError


class Stage(enum.StrEnum):
    PARSE = "parse"
    CHAIN = "chain"
    SIGNATURE = "signature"
    BINDING = "binding"
    POLICY = "policy"


class Reason(enum.StrEnum):
    TRUNCATED = "truncated"
    TRAILING_BYTES = "trailing-bytes"
    MALFORMED = "malformed"
    UNSUPPORTED = "unsupported"
    UNTRUSTED_ROOT = "untrusted-root"
    BAD_CHAIN = "bad-chain"
    EXPIRED = "expired"
    NOT_YET_VALID = "not-yet-valid"
    BAD_SIGNATURE = "bad-signature"
    REPORT_DATA_MISMATCH = "report-data-mismatch"
    NONCE_MISMATCH = "nonce-mismatch"
    MEASUREMENT_NOT_ALLOWED = "measurement-not-allowed"
    SIGNER_NOT_ALLOWED = "signer-not-allowed"
    SVN_TOO_LOW = "svn-too-low"
    DEBUG_ENABLED = "debug-enabled"
    TOO_OLD = "evidence-too-old"
    PRODUCT_NOT_ALLOWED = "product-not-allowed"
    REVOKED = "revoked"
    TCB_NOT_CHECKED = "tcb-not-checked"
    TCB_STATUS_NOT_ALLOWED = "tcb-status-not-allowed"
    TCB_TOO_OLD = "tcb-too-old"
    DEBUG_UNKNOWN = "debug-unknown"


class EvidenceRejected(SecurityError):
    """Evidence failed a stage of the pipeline; `stage` and `reason` say which and why."""

    def __init__(self, stage: Stage, reason: Reason, detail: str = "") -> None:
        self.stage = stage
        self.reason = reason
        self.detail = detail
        msg = f"evidence rejected at {stage.value}: {reason.value}"
        super().__init__(f"{msg} ({detail})" if detail else msg)


@dataclass
class Claims:
    """What a verified piece of evidence says about the attested environment.

    `measurement` is the primary code identity (MRENCLAVE, MRTD, SNP MEASUREMENT, ...), `signer`
    the signing identity (MRSIGNER, ...; empty bytes where the platform has none). `components`
    keeps named sub-measurements (e.g. code/config/model hashes, RTMRs, GPU measurement indices)
    so a verifier can say which part differs. `report_data` is the 64 bytes bound by the quote.
    `checked` and `not_checked` list, in words, what was and was not appraised.
    """

    evidence_type: str
    measurement: bytes
    signer: bytes
    product_id: int
    svn: int
    debug: bool | None  # None: the evidence does not show whether debugging is possible
    report_data: bytes
    issued_at: datetime | None = None
    components: dict[str, bytes] = field(default_factory=dict)
    extra: dict[str, object] = field(default_factory=dict)
    checked: list[str] = field(default_factory=list)
    not_checked: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        def enc(v: object) -> object:
            if isinstance(v, bytes):
                return v.hex()
            if isinstance(v, datetime):
                return v.isoformat()
            if isinstance(v, dict):
                return {k: enc(x) for k, x in v.items()}
            if isinstance(v, list | tuple):
                return [enc(x) for x in v]
            return v

        return {k: enc(v) for k, v in self.__dict__.items()}
