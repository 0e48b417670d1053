"""TDX quote v4 and v5 verifier against real quotes (google/go-tdx-guest samples)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from privinfer.tee.claims import EvidenceRejected, Reason
from privinfer.tee.evidence.detect import detect_type, verify_evidence
from privinfer.tee.evidence.tdx import verify_tdx
from privinfer.tee.policy import ANY, Policy

DATA = Path(__file__).parent.parent / "data" / "attestation"
_V4_RAW = (DATA / "tdx_quote_v4.dat").read_bytes()
# go-tdx-guest appended this text to its v4 sample for its own tests; a strict parser rejects it.
_EXTRA = b"\nextra bytes(only for testing purpose)\n"
assert _V4_RAW.endswith(_EXTRA)
V4 = _V4_RAW[: -len(_EXTRA)]
V5 = (DATA / "tdx_quote_v5.dat").read_bytes()
AT = datetime(2026, 6, 1, tzinfo=UTC)  # v5 PCK leaf valid from 2026-01-27, v4 leaf until 2029-09
MRTD = {
    4: bytes.fromhex(
        "6363b8043668a3ad953278e10389574d326c6749fb78aa810ecd9336923db86f22fc00b8dcd404bc10d5e119d7215cbb"
    ),
}
HEADER = 48
BODY_AT = {4: HEADER, 5: HEADER + 6}
SIG_AT = {4: HEADER + 584 + 4, 5: HEADER + 6 + 648 + 4}
QUOTES = {4: V4, 5: V5}


def flip(data: bytes, pos: int, bit: int = 0) -> bytes:
    out = bytearray(data)
    out[pos] ^= 1 << bit
    return bytes(out)


def mrtd(v: int) -> bytes:
    return QUOTES[v][BODY_AT[v] + 136 : BODY_AT[v] + 184]


def ok(v: int) -> Policy:
    return Policy(
        allowed_measurements=frozenset({mrtd(v)}),
        allowed_signers=frozenset({bytes(48)}),
        require_tcb=False,  # these tests check what the quote proves without collateral
    )


def rejected(v: int, data: bytes, reason: Reason, **kw: object) -> EvidenceRejected:
    kw.setdefault("policy", ok(v))
    kw.setdefault("at", AT)
    with pytest.raises(EvidenceRejected) as err:
        verify_tdx(data, **kw)  # type: ignore[arg-type]
    assert err.value.reason == reason, err.value
    return err.value


versions = pytest.mark.parametrize("v", [4, 5])


@versions
def test_sample_verifies_at_pinned_time(v: int) -> None:
    c = verify_tdx(QUOTES[v], policy=ok(v), at=AT)
    assert c.evidence_type == "tdx" and c.measurement == mrtd(v) and len(c.measurement) == 48
    assert c.extra["quote_version"] == v and not c.debug
    assert {"rtmr0", "rtmr1", "rtmr2", "rtmr3", "mrseam"} <= set(c.components)
    assert len(c.report_data) == 64


def test_v4_known_mrtd_and_v5_td15_body() -> None:
    assert verify_tdx(V4, policy=ok(4), at=AT).measurement == MRTD[4]
    c5 = verify_tdx(V5, policy=ok(5), at=AT)
    assert c5.extra["body_type"] == 3 and "mrservicetd" in c5.components


@versions
def test_detect(v: int) -> None:
    assert detect_type(QUOTES[v]) == "tdx"
    assert verify_evidence(QUOTES[v], policy=ok(v), at=AT).evidence_type == "tdx"


@versions
def test_flipped_mrtd_is_bad_signature(v: int) -> None:
    rejected(v, flip(QUOTES[v], BODY_AT[v] + 140), Reason.BAD_SIGNATURE)


@versions
def test_flipped_debug_attribute_is_bad_signature(v: int) -> None:
    rejected(v, flip(QUOTES[v], BODY_AT[v] + 120), Reason.BAD_SIGNATURE)


@versions
def test_flipped_signature_is_bad_signature(v: int) -> None:
    rejected(v, flip(QUOTES[v], SIG_AT[v] + 40), Reason.BAD_SIGNATURE)


@versions
def test_truncated(v: int) -> None:
    rejected(v, QUOTES[v][:-1], Reason.TRUNCATED)
    rejected(v, QUOTES[v][: BODY_AT[v] + 10], Reason.TRUNCATED)


@versions
def test_zero_padding_accepted_nonzero_trailing_byte_refused(v: int) -> None:
    c = verify_tdx(QUOTES[v] + bytes(71), policy=ok(v), at=AT)
    assert c.extra["padding_bytes"] == 71
    assert verify_tdx(QUOTES[v], policy=ok(v), at=AT).extra["padding_bytes"] == 0
    rejected(v, QUOTES[v] + b"\x01", Reason.TRAILING_BYTES)
    rejected(v, QUOTES[v] + bytes(70) + b"\x80", Reason.TRAILING_BYTES)


def test_unchanged_go_tdx_guest_file_has_trailing_bytes() -> None:
    rejected(4, _V4_RAW, Reason.TRAILING_BYTES)


@versions
def test_wrong_pinned_root_is_untrusted(v: int) -> None:
    rejected(
        v, QUOTES[v], Reason.UNTRUSTED_ROOT, roots=[(DATA / "hopperCertChain.txt").read_bytes()]
    )


@versions
def test_after_expiry_is_expired(v: int) -> None:
    rejected(v, QUOTES[v], Reason.EXPIRED, at=datetime(2034, 1, 1, tzinfo=UTC))


def test_v5_before_its_leaf_is_not_yet_valid() -> None:
    rejected(5, V5, Reason.NOT_YET_VALID, at=datetime(2025, 7, 1, tzinfo=UTC))


@versions
def test_report_data_binding(v: int) -> None:
    rd = QUOTES[v][BODY_AT[v] + 520 : BODY_AT[v] + 584]
    assert verify_tdx(QUOTES[v], policy=ok(v), at=AT, expected_report_data=rd)
    rejected(v, QUOTES[v], Reason.REPORT_DATA_MISMATCH, expected_report_data=flip(rd, 0))


@versions
def test_default_policy_denies_measurement(v: int) -> None:
    rejected(v, QUOTES[v], Reason.MEASUREMENT_NOT_ALLOWED, policy=Policy())


def test_v5_body_size_must_match_type() -> None:
    bad = bytearray(V5)
    bad[HEADER + 2] ^= 0x01  # body size 648 -> 649
    rejected(5, bytes(bad), Reason.UNSUPPORTED)


def test_sgx_quote_is_not_a_tdx_quote() -> None:
    sgx = (DATA / "sgx_quote_v3.dat").read_bytes()
    with pytest.raises(EvidenceRejected) as err:
        verify_tdx(sgx, policy=Policy(allowed_measurements=ANY, allowed_signers=ANY), at=AT)
    assert err.value.reason == Reason.UNSUPPORTED
