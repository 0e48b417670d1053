"""NVIDIA H100 SPDM measurement verifier against nvtrust's sample report and device chain."""

from __future__ import annotations

import binascii
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from privinfer.tee.claims import EvidenceRejected, Reason
from privinfer.tee.evidence.detect import detect_type, verify_evidence
from privinfer.tee.evidence.nvidia import parse_spdm, verify_nvidia
from privinfer.tee.policy import ANY, Policy

DATA = Path(__file__).parent.parent / "data" / "attestation"
TEXT = (DATA / "hopperAttestationReport.txt").read_bytes()
REPORT = binascii.unhexlify(TEXT.strip())
CERTS = [(DATA / "hopperCertChain.txt").read_bytes()]
AT = datetime(2026, 6, 1, tzinfo=UTC)  # chain valid 2022-03-01 .. 9999-12-31
# nvtrust's sample nonce: public, so never fresh; tests pin it on purpose.
SAMPLE_NONCE = bytes.fromhex("931d8dd0add203ac3d8b4fbde75e115278eefcdceac5b87671a748f32364dfcb")
MEASUREMENT = bytes.fromhex(
    "4e18bc36ebbefedfa181423be91de7450ce41e51192358adbaaaf3dcc08f30a11d85b608a0408da67add8c6e78607246"
)
# SPDM 1.1 does not show the GPU's debug state: a policy must admit "unknown" explicitly.
OK = Policy(
    allowed_measurements=frozenset({MEASUREMENT}),
    allowed_signers=frozenset({b""}),
    allow_unknown_debug=True,
)
RECORD_AT = 37 + 8  # request (37 bytes) + response header (8 bytes)


def flip(data: bytes, pos: int, bit: int = 0) -> bytes:
    out = bytearray(data)
    out[pos] ^= 1 << bit
    return bytes(out)


def rejected(data: bytes, reason: Reason, **kw: object) -> EvidenceRejected:
    kw.setdefault("policy", OK)
    kw.setdefault("at", AT)
    kw.setdefault("certs", CERTS)
    with pytest.raises(EvidenceRejected) as err:
        verify_nvidia(data, **kw)  # type: ignore[arg-type]
    assert err.value.reason == reason, err.value
    return err.value


def test_sample_verifies_at_pinned_time() -> None:
    c = verify_nvidia(REPORT, certs=CERTS, policy=OK, at=AT, expected_report_data=SAMPLE_NONCE)
    assert c.evidence_type == "nvidia" and c.measurement == MEASUREMENT and c.signer == b""
    assert c.report_data == SAMPLE_NONCE
    assert len(c.components) == 64 and all(len(v) == 48 for v in c.components.values())
    assert c.components["index_2"].hex().startswith("8048dfd18fe229bf")
    assert any("RIM" in s for s in c.not_checked)


def test_parser_reads_all_blocks() -> None:
    rep = parse_spdm(REPORT)
    assert sorted(rep.blocks) == list(range(1, 65)) and len(rep.opaque) == 422


def test_hex_text_detected_and_verified() -> None:
    assert detect_type(REPORT) == "nvidia"
    assert verify_evidence(TEXT, certs=CERTS, policy=OK, at=AT).measurement == MEASUREMENT


def test_flipped_measurement_block_is_bad_signature() -> None:
    rejected(flip(REPORT, RECORD_AT + 4 * 55 + 20), Reason.BAD_SIGNATURE)


def test_flipped_request_nonce_is_bad_signature() -> None:
    rejected(flip(REPORT, 10), Reason.BAD_SIGNATURE)


def test_flipped_signature_is_bad_signature() -> None:
    rejected(flip(REPORT, len(REPORT) - 50), Reason.BAD_SIGNATURE)


def test_truncated() -> None:
    rejected(REPORT[:-1], Reason.TRUNCATED)
    rejected(REPORT[:500], Reason.TRUNCATED)


def test_trailing_bytes() -> None:
    rejected(REPORT + b"\0", Reason.TRAILING_BYTES)


def test_wrong_pinned_root_is_untrusted() -> None:
    rejected(REPORT, Reason.UNTRUSTED_ROOT, roots=[(DATA / "intel_sgx_root.pem").read_bytes()])


def test_after_expiry_is_expired() -> None:
    # NVIDIA's device certificates are valid until 9999-12-31 23:59:59: only the very end expires.
    rejected(REPORT, Reason.EXPIRED, at=datetime.max.replace(tzinfo=UTC))


def test_fresh_nonce_does_not_match_public_sample_nonce() -> None:
    rejected(REPORT, Reason.REPORT_DATA_MISMATCH, expected_report_data=os.urandom(32))


def test_default_policy_denies_measurement() -> None:
    rejected(REPORT, Reason.DEBUG_UNKNOWN, policy=Policy())
    rejected(REPORT, Reason.MEASUREMENT_NOT_ALLOWED, policy=Policy(allow_unknown_debug=True))


def test_any_policy_accepts() -> None:
    p = Policy(allowed_measurements=ANY, allowed_signers=ANY, allow_unknown_debug=True)
    assert verify_nvidia(REPORT, certs=CERTS, policy=p, at=AT).extra["blocks"] == 64
