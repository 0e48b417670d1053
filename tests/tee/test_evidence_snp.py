"""SEV-SNP report verifier against a real Milan report with its VCEK, ASK and ARK (go-sev-guest)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from privinfer.tee.claims import EvidenceRejected, Reason
from privinfer.tee.evidence.detect import detect_type, verify_evidence
from privinfer.tee.evidence.snp import verify_snp
from privinfer.tee.policy import ANY, Policy

DATA = Path(__file__).parent.parent / "data" / "attestation"
REPORT = (DATA / "snp_attestation.bin").read_bytes()
CERTS = [(DATA / "vcek.der").read_bytes(), (DATA / "ask_ark_milan.pem").read_bytes()]
AT = datetime(2026, 6, 1, tzinfo=UTC)  # VCEK 2022-09..2029-09, ASK/ARK 2020-10..2045-10
MEASUREMENT = bytes.fromhex(
    "b07af9620f3b839b47996422ddec6058338951d984e312115131ea82705eaf5b6bdf8a9ece31a5a608eb0cf2e4872b01"
)
DEBUG_OK = Policy(
    allowed_measurements=frozenset({MEASUREMENT}), allowed_signers=ANY, allow_debug=True
)


def flip(data: bytes, pos: int, bit: int = 0) -> bytes:
    out = bytearray(data)
    out[pos] ^= 1 << bit
    return bytes(out)


def rejected(data: bytes, reason: Reason, **kw: object) -> EvidenceRejected:
    kw.setdefault("policy", DEBUG_OK)
    kw.setdefault("at", AT)
    kw.setdefault("certs", CERTS)
    with pytest.raises(EvidenceRejected) as err:
        verify_snp(data, **kw)  # type: ignore[arg-type]
    assert err.value.reason == reason, err.value
    return err.value


def test_sample_verifies_when_debug_allowed() -> None:
    c = verify_snp(REPORT, certs=CERTS, policy=DEBUG_OK, at=AT)
    assert c.evidence_type == "snp" and c.measurement == MEASUREMENT and c.debug
    assert c.report_data.startswith(bytes([1, 2, 3, 4, 5])) and len(c.report_data) == 64
    assert c.signer == bytes(48)  # no ID key in this report
    assert any("CHIP_ID" in s for s in c.checked)


def test_default_policy_rejects_debug() -> None:
    rejected(REPORT, Reason.DEBUG_ENABLED, policy=Policy())


def test_allow_debug_with_any_accepts() -> None:
    p = Policy(allowed_measurements=ANY, allowed_signers=ANY, allow_debug=True)
    assert verify_snp(REPORT, certs=CERTS, policy=p, at=AT).debug


def test_detect_and_generic_entry() -> None:
    assert detect_type(REPORT) == "snp"
    assert verify_evidence(REPORT, certs=CERTS, policy=DEBUG_OK, at=AT).measurement == MEASUREMENT


def test_flipped_measurement_is_bad_signature() -> None:
    rejected(flip(REPORT, 0x90), Reason.BAD_SIGNATURE)


def test_cleared_debug_bit_is_bad_signature() -> None:
    rejected(
        flip(REPORT, 0x0A, 3),
        Reason.BAD_SIGNATURE,
        policy=Policy(allowed_measurements=ANY, allowed_signers=ANY),
    )


def test_flipped_signature_is_bad_signature() -> None:
    rejected(flip(REPORT, 0x2A0), Reason.BAD_SIGNATURE)


def test_chip_id_of_another_chip_breaks_vcek_binding() -> None:
    rejected(flip(REPORT, 0x1A0), Reason.BAD_CHAIN)


def test_truncated() -> None:
    rejected(REPORT[:-1], Reason.TRUNCATED)


def test_trailing_bytes() -> None:
    rejected(REPORT + b"\0", Reason.TRAILING_BYTES)


def test_wrong_pinned_root_is_untrusted() -> None:
    rejected(REPORT, Reason.UNTRUSTED_ROOT, roots=[(DATA / "intel_sgx_root.pem").read_bytes()])


def test_missing_ark_is_untrusted() -> None:
    rejected(REPORT, Reason.UNTRUSTED_ROOT, certs=CERTS[:1])


def test_after_expiry_is_expired() -> None:
    rejected(REPORT, Reason.EXPIRED, at=datetime(2030, 1, 1, tzinfo=UTC))


def test_report_data_binding() -> None:
    assert verify_snp(
        REPORT, certs=CERTS, policy=DEBUG_OK, at=AT, expected_report_data=bytes([1, 2, 3, 4, 5])
    )
    rejected(REPORT, Reason.REPORT_DATA_MISMATCH, expected_report_data=bytes([1, 2, 3, 4, 6]))


def test_empty_measurement_allowlist_denies() -> None:
    rejected(REPORT, Reason.MEASUREMENT_NOT_ALLOWED, policy=Policy(allow_debug=True))


def test_nonzero_reserved_bytes_after_signature_are_malformed() -> None:
    rejected(flip(REPORT, 0x400), Reason.MALFORMED)
