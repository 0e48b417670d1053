"""Where the enclave's quotes come from: the software platform, or Gramine-SGX's /dev/attestation.

Security assumption: a provider only produces evidence; nothing it returns is trusted until the
client's verifier pipeline (chain -> signature -> binding -> policy) accepts it. On real SGX
hardware under Gramine the quote's identity (MRENCLAVE, MRSIGNER, ISVPRODID, ISVSVN, DEBUG) is
set by the CPU from the enclave actually loaded, so the `identity` argument is ignored there;
on the software platform it is the launcher's measurement, signed by the platform key.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Protocol

from privinfer.errors import SecurityError
from privinfer.tee.measurement import EnclaveIdentity
from privinfer.tee.platform import Platform

GRAMINE_DEV = Path("/dev/attestation")


class QuoteProvider(Protocol):
    evidence_type: str

    def quote(
        self, identity: EnclaveIdentity, report_data: bytes, *, now: datetime | None = None
    ) -> bytes: ...


class SoftwareProvider:
    """Quotes signed by the software platform's attestation key (see platform.py)."""

    evidence_type = "privinfer-software-v1"

    def __init__(self, platform: Platform) -> None:
        self.platform = platform

    def quote(
        self, identity: EnclaveIdentity, report_data: bytes, *, now: datetime | None = None
    ) -> bytes:
        return self.platform.quote(identity, report_data, now=now)


class GramineProvider:
    """SGX DCAP quotes from Gramine's pseudo-files (`/dev/attestation/...`).

    Write the 64-byte report_data to `user_report_data`, read the quote from `quote`. The quote is
    parsed and its report_data compared with what was written before it is handed out, so a
    stale or foreign quote is caught early (the client still verifies everything itself).
    """

    evidence_type = "sgx"

    def __init__(self, dev: Path = GRAMINE_DEV) -> None:
        self.dev = dev

    @staticmethod
    def available(dev: Path = GRAMINE_DEV) -> bool:
        return (dev / "quote").exists() and (dev / "user_report_data").exists()

    def attestation_type(self) -> str:
        try:
            return (self.dev / "attestation_type").read_text().strip()
        except OSError:
            return "unknown"

    def quote(
        self, identity: EnclaveIdentity, report_data: bytes, *, now: datetime | None = None
    ) -> bytes:
        from privinfer.tee.evidence.dcap import parse_quote
        from privinfer.tee.evidence.sgx import claims_from_body

        if len(report_data) != 64:
            raise SecurityError("report_data must be exactly 64 bytes")
        if not self.available(self.dev):
            raise SecurityError(
                f"no Gramine attestation interface at {self.dev} (not inside Gramine-SGX?)"
            )
        kind = self.attestation_type()
        if kind not in ("dcap", "unknown"):
            raise SecurityError(
                f"Gramine attestation type is {kind!r}; privinfer verifies DCAP quotes only"
            )
        try:
            (self.dev / "user_report_data").write_bytes(report_data)
            raw = (self.dev / "quote").read_bytes()
        except OSError as exc:
            raise SecurityError(
                f"Gramine refused to produce a quote ({exc.strerror or type(exc).__name__})"
            ) from None
        q = parse_quote(raw)  # raises EvidenceRejected on a malformed quote
        if q.body_type != 1:
            raise SecurityError("Gramine returned a quote that is not an SGX enclave quote")
        if claims_from_body(q.body).report_data != report_data:
            raise SecurityError(
                "Gramine returned a quote for other report_data (stale or foreign quote)"
            )
        return raw
