"""SGX DCAP quote v3 verifier against a real quote (Phala dcap-qvl sample) and its collateral."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from privinfer.tee.claims import EvidenceRejected, Reason
from privinfer.tee.evidence.detect import detect_type, verify_evidence
from privinfer.tee.evidence.sgx import verify_sgx
from privinfer.tee.policy import ANY, Policy

DATA = Path(__file__).parent.parent / "data" / "attestation"
QUOTE = (DATA / "sgx_quote_v3.dat").read_bytes()
COLLATERAL = (DATA / "sgx_quote_collateral.json").read_bytes()
AT = datetime(2026, 6, 1, tzinfo=UTC)  # inside PCK leaf (2023-09..2030-09), PCK CA, root
AT_COLLATERAL = datetime(2025, 7, 1, tzinfo=UTC)  # collateral is valid 2025-06-19..2025-07-19
MRENCLAVE = bytes.fromhex("33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb")
MRSIGNER = bytes.fromhex("815f42f11cf64430c30bab7816ba596a1da0130c3b028b673133a66cf9a3e0e6")
# require_tcb=False: most tests here check what the quote proves without Intel collateral.
OK = Policy(
    allowed_measurements=frozenset({MRENCLAVE}),
    allowed_signers=frozenset({MRSIGNER}),
    require_tcb=False,
)
# The sample's platform TCB status is ConfigurationAndSWHardeningNeeded: named to pass.
OK_TCB = replace(
    OK,
    require_tcb=True,
    allowed_tcb_statuses=frozenset({"UpToDate", "ConfigurationAndSWHardeningNeeded"}),
)
MRENCLAVE_AT, SIG_AT, QE_REPORT_AT, ATT_KEY_AT = 48 + 64, 436, 0x234, 0x1F4


def flip(data: bytes, pos: int, bit: int = 0) -> bytes:
    out = bytearray(data)
    out[pos] ^= 1 << bit
    return bytes(out)


def rejected(data: bytes, reason: Reason, **kw: object) -> EvidenceRejected:
    kw.setdefault("policy", OK)
    kw.setdefault("at", AT)
    with pytest.raises(EvidenceRejected) as err:
        verify_sgx(data, **kw)  # type: ignore[arg-type]
    assert err.value.reason == reason, err.value
    return err.value


def test_sample_verifies_at_pinned_time() -> None:
    c = verify_sgx(QUOTE, policy=OK, at=AT)
    assert c.evidence_type == "sgx" and c.measurement == MRENCLAVE and c.signer == MRSIGNER
    assert c.report_data.startswith(b"Hello, world!") and len(c.report_data) == 64
    assert not c.debug and c.product_id == 0 and c.svn == 0
    assert any("Intel SGX Root CA" in s for s in c.checked)
    assert any("TCB status" in s for s in c.not_checked)


def test_detects_and_verifies_through_generic_entry() -> None:
    assert detect_type(QUOTE) == "sgx"
    assert verify_evidence(QUOTE, policy=OK, at=AT, certs=None).measurement == MRENCLAVE


def test_flipped_mrenclave_is_bad_signature() -> None:
    rejected(flip(QUOTE, MRENCLAVE_AT), Reason.BAD_SIGNATURE)


def test_flipped_quote_signature_is_bad_signature() -> None:
    rejected(flip(QUOTE, SIG_AT + 5), Reason.BAD_SIGNATURE)


def test_flipped_qe_report_is_bad_signature() -> None:
    rejected(flip(QUOTE, QE_REPORT_AT + 300), Reason.BAD_SIGNATURE)


def test_swapped_attestation_key_is_not_bound_by_qe() -> None:
    err = rejected(flip(QUOTE, ATT_KEY_AT + 3), Reason.BAD_SIGNATURE)
    assert "attestation key" in err.detail


def test_truncated_quote() -> None:
    rejected(QUOTE[:-1], Reason.TRUNCATED)
    rejected(QUOTE[:100], Reason.TRUNCATED)


def test_zero_padding_accepted_and_reported_nonzero_trailing_byte_refused() -> None:
    assert verify_sgx(QUOTE + bytes(70), policy=OK, at=AT).extra["padding_bytes"] == 70
    rejected(QUOTE + bytes(69) + b"\x01", Reason.TRAILING_BYTES)


def test_wrong_pinned_root_is_untrusted() -> None:
    rejected(QUOTE, Reason.UNTRUSTED_ROOT, roots=[(DATA / "ask_ark_milan.pem").read_bytes()])


def test_explicit_intel_root_is_accepted() -> None:
    assert verify_sgx(QUOTE, policy=OK, at=AT, roots=[(DATA / "intel_sgx_root.pem").read_bytes()])


def test_after_expiry_is_expired() -> None:
    rejected(QUOTE, Reason.EXPIRED, at=datetime(2031, 1, 1, tzinfo=UTC))


def test_before_validity_is_not_yet_valid() -> None:
    rejected(QUOTE, Reason.NOT_YET_VALID, at=datetime(2020, 1, 1, tzinfo=UTC))


def test_report_data_binding() -> None:
    assert verify_sgx(QUOTE, policy=OK, at=AT, expected_report_data=b"Hello, world!")
    rejected(QUOTE, Reason.REPORT_DATA_MISMATCH, expected_report_data=b"Hello, world?")


def test_default_policy_denies_measurement() -> None:
    rejected(QUOTE, Reason.MEASUREMENT_NOT_ALLOWED, policy=Policy())


def test_wrong_signer_denied() -> None:
    rejected(QUOTE, Reason.SIGNER_NOT_ALLOWED, policy=Policy(allowed_measurements=ANY))


def test_collateral_verifies_and_appraises_tcb() -> None:
    c = verify_sgx(QUOTE, policy=OK_TCB, at=AT_COLLATERAL, collateral=COLLATERAL)
    assert c.extra["fmspc"] == "00A067110000"
    assert c.extra["tcb_status"] == "ConfigurationAndSWHardeningNeeded"
    assert c.extra["qe_tcb_status"] == "UpToDate"
    assert not any("revocation" in s for s in c.not_checked)


def test_tampered_tcb_info_is_bad_signature() -> None:
    coll = json.loads(COLLATERAL)
    coll["tcb_info"] = coll["tcb_info"].replace("OutOfDate", "UpToDate", 1)
    rejected(QUOTE, Reason.BAD_SIGNATURE, at=AT_COLLATERAL, collateral=json.dumps(coll).encode())


def test_collateral_after_next_update_is_expired() -> None:
    rejected(QUOTE, Reason.EXPIRED, at=datetime(2025, 8, 1, tzinfo=UTC), collateral=COLLATERAL)
