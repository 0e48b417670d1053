"""Quote providers: the Gramine-SGX provider against a stand-in /dev/attestation (parsing only:
there is no SGX hardware here) and the software provider through the client's verifier."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from privinfer.errors import SecurityError
from privinfer.tee.claims import EvidenceRejected
from privinfer.tee.evidence.dcap import parse_quote
from privinfer.tee.evidence.sgx import claims_from_body
from privinfer.tee.providers import GramineProvider

DATA = Path(__file__).parents[1] / "data" / "attestation"


def fake_dev(tmp_path: Path, quote: bytes, kind: str = "dcap") -> Path:
    dev = tmp_path / "attestation"
    dev.mkdir()
    (dev / "quote").write_bytes(quote)
    (dev / "user_report_data").write_bytes(b"")
    (dev / "attestation_type").write_text(kind + "\n")
    return dev


def test_gramine_provider_writes_report_data_and_returns_matching_quote(tmp_path):
    sample = (DATA / "sgx_quote_v3.dat").read_bytes()
    rd = claims_from_body(parse_quote(sample).body).report_data
    dev = fake_dev(tmp_path, sample)
    out = GramineProvider(dev).quote(None, rd)  # type: ignore[arg-type]
    assert out == sample
    assert (dev / "user_report_data").read_bytes() == rd


def test_gramine_provider_rejects_quote_for_other_report_data(tmp_path):
    dev = fake_dev(tmp_path, (DATA / "sgx_quote_v3.dat").read_bytes())
    with pytest.raises(SecurityError, match="other report_data"):
        GramineProvider(dev).quote(None, b"\x01" * 64)  # type: ignore[arg-type]


def test_gramine_provider_rejects_truncated_quote(tmp_path):
    dev = fake_dev(tmp_path, (DATA / "sgx_quote_v3.dat").read_bytes()[:300])
    with pytest.raises(EvidenceRejected, match="truncated"):
        GramineProvider(dev).quote(None, b"\0" * 64)  # type: ignore[arg-type]


def test_gramine_provider_refuses_epid_and_absence(tmp_path):
    dev = fake_dev(tmp_path, b"x", kind="epid")
    with pytest.raises(SecurityError, match="DCAP quotes only"):
        GramineProvider(dev).quote(None, b"\0" * 64)  # type: ignore[arg-type]
    with pytest.raises(SecurityError, match="no Gramine attestation interface"):
        GramineProvider(tmp_path / "absent").quote(None, b"\0" * 64)  # type: ignore[arg-type]


def test_client_routes_hardware_quotes_to_the_dcap_verifier_only_when_it_trusts_sgx():
    """With `HardwareTrust("sgx")` a DCAP quote goes through the SGX pipeline; the sample's
    report_data is not our binding, so it is rejected at the binding stage (after chain and
    signature passed)."""
    from privinfer.tee.attestation import HardwareTrust, verify_attestation
    from privinfer.tee.policy import ANY, Policy

    sample = (DATA / "sgx_quote_v3.dat").read_bytes()
    pol = Policy(allowed_measurements=ANY, allowed_signers=ANY, max_age_s=None)
    with pytest.raises(EvidenceRejected) as e:
        verify_attestation(
            sample,
            b"n" * 32,
            b"k" * 32,
            b"ctx",
            HardwareTrust("sgx"),
            pol,
            now=datetime(2026, 6, 1, tzinfo=UTC),
        )
    assert e.value.reason.value == "report-data-mismatch"
