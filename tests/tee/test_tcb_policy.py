"""TCB appraisal from Intel collateral and the policy on it (issue 13, finding 3), on real quotes.

Vectors: the SGX v3 sample and its collateral (status ConfigurationAndSWHardeningNeeded), a
production TDX v4 quote with 70 bytes of zero padding and its collateral (UpToDate), a TDX v5
quote whose platform is below every listed TCB level, and go-tdx-guest's v4 quote with collateral
assembled from that repository's test data (also below every level). dcap-qvl 0.7.0 gives the
same statuses (tests/tee/test_dcap_differential.py).
"""

from __future__ import annotations

import json
import struct
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from privinfer.tee.attestation import HardwareTrust, verify_attestation
from privinfer.tee.claims import EvidenceRejected, Reason
from privinfer.tee.evidence import dcap
from privinfer.tee.evidence.collateral import collateral_for, find_collateral, match_tcb_level
from privinfer.tee.evidence.detect import verify_evidence
from privinfer.tee.policy import ANY, Policy, check_tcb

DATA = Path(__file__).parents[1] / "data" / "attestation"
SGX = (DATA / "sgx_quote_v3.dat").read_bytes()
SGX_COLL = (DATA / "sgx_quote_collateral.json").read_bytes()
TDX4 = (DATA / "dcap_qvl_tdx_quote_v4.dat").read_bytes()
TDX4_COLL = (DATA / "dcap_qvl_tdx_quote_v4_collateral.json").read_bytes()
TDX5 = (DATA / "dcap_qvl_tdx_quote_v5_unmatched.dat").read_bytes()
TDX5_COLL = (DATA / "dcap_qvl_tdx_quote_v5_unmatched_collateral.json").read_bytes()
GO_TDX4 = (DATA / "tdx_quote_v4.dat").read_bytes()[
    : -len(b"\nextra bytes(only for testing purpose)\n")
]
GO_TDX4_COLL = (DATA / "tdx_quote_v4_collateral.json").read_bytes()
AT_2025 = datetime(2025, 7, 1, tzinfo=UTC)
AT_2026 = datetime(2026, 3, 1, tzinfo=UTC)
AT_2023 = datetime(2023, 7, 1, tzinfo=UTC)
ANY_ID = Policy(allowed_measurements=ANY, allowed_signers=ANY)


def reason_of(data: bytes, *, policy: Policy = ANY_ID, **kw: object) -> Reason:
    with pytest.raises(EvidenceRejected) as err:
        verify_evidence(data, policy=policy, **kw)  # type: ignore[arg-type]
    return err.value.reason


def allowing(*statuses: str, **kw: object) -> Policy:
    return replace(ANY_ID, allowed_tcb_statuses=frozenset(statuses), **kw)  # type: ignore[arg-type]


# --- finding 3: statuses other than UpToDate / SWHardeningNeeded are refused by default -------
def test_sgx_configuration_needed_refused_by_default_and_passes_when_named() -> None:
    assert reason_of(SGX, at=AT_2025, collateral=SGX_COLL) == Reason.TCB_STATUS_NOT_ALLOWED
    c = verify_evidence(
        SGX,
        policy=allowing("ConfigurationAndSWHardeningNeeded", "UpToDate"),
        at=AT_2025,
        collateral=SGX_COLL,
    )
    assert c.extra["tcb_status"] == "ConfigurationAndSWHardeningNeeded"
    assert c.extra["advisory_ids"] == ["INTEL-SA-00289", "INTEL-SA-00615"]
    assert not any("TCB status" in s for s in c.not_checked)


@pytest.mark.parametrize(
    ("quote", "coll", "at"), [(TDX5, TDX5_COLL, AT_2026), (GO_TDX4, GO_TDX4_COLL, AT_2023)]
)
def test_tdx_platform_below_every_level_is_refused(quote: bytes, coll: bytes, at: datetime) -> None:
    assert reason_of(quote, at=at, collateral=coll) == Reason.TCB_STATUS_NOT_ALLOWED
    c = verify_evidence(
        quote, policy=allowing("UpToDate", "NoMatchingTcbLevel"), at=at, collateral=coll
    )
    assert c.extra["tcb_status"] == "NoMatchingTcbLevel" and c.extra["tcb_date"] is None


def test_padded_production_tdx_v4_with_collateral_is_up_to_date() -> None:
    c = verify_evidence(TDX4, policy=ANY_ID, at=AT_2025, collateral=TDX4_COLL)
    assert (c.extra["tcb_status"], c.extra["qe_tcb_status"]) == ("UpToDate", "UpToDate")
    assert c.extra["padding_bytes"] == 70 and c.extra["quote_version"] == 4
    assert reason_of(TDX4 + b"\x01", at=AT_2025, collateral=TDX4_COLL) == Reason.TRAILING_BYTES


def test_out_of_date_level_is_matched_and_refused() -> None:
    """Lower the sample platform's CPU SVN below Intel's 2024 levels: the real TCB info gives
    OutOfDate, which the default policy refuses and a policy naming it accepts."""
    levels = json.loads(json.loads(SGX_COLL)["tcb_info"])["tcbLevels"]
    old = next(lv["tcb"] for lv in levels if lv["tcbStatus"] == "OutOfDate")
    cpu_svn = [c["svn"] for c in old["sgxtcbcomponents"]]
    level = match_tcb_level(levels, cpu_svn, old["pcesvn"], None)
    assert level is not None and level["tcbStatus"] == "OutOfDate"
    assert match_tcb_level(levels, [0] * 16, 0, None) is None
    extra = {"tcb_status": "OutOfDate", "qe_tcb_status": "UpToDate", "tcb_eval_number": 17}
    with pytest.raises(EvidenceRejected) as err:
        check_tcb("sgx", extra, ANY_ID)
    assert err.value.reason == Reason.TCB_STATUS_NOT_ALLOWED
    check_tcb("sgx", extra, allowing("OutOfDate", "UpToDate"))


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        ("ConfigurationNeeded", Reason.TCB_STATUS_NOT_ALLOWED),
        ("OutOfDateConfigurationNeeded", Reason.TCB_STATUS_NOT_ALLOWED),
        ("Revoked", Reason.REVOKED),
        ("NoMatchingTcbLevel", Reason.TCB_STATUS_NOT_ALLOWED),
    ],
)
def test_default_policy_refuses_status(status: str, reason: Reason) -> None:
    for extra in (
        {"tcb_status": status, "qe_tcb_status": "UpToDate", "tcb_eval_number": 17},
        {"tcb_status": "UpToDate", "qe_tcb_status": status, "tcb_eval_number": 17},
    ):
        with pytest.raises(EvidenceRejected) as err:
            check_tcb("tdx", extra, ANY_ID)
        assert err.value.reason == reason


def test_min_tcb_evaluation_number_and_date() -> None:
    pol = allowing("UpToDate", min_tcb_eval_number=18)
    assert reason_of(TDX4, policy=pol, at=AT_2025, collateral=TDX4_COLL) == Reason.TCB_TOO_OLD
    pol = allowing("UpToDate", min_tcb_date=datetime(2024, 6, 1, tzinfo=UTC))
    assert reason_of(TDX4, policy=pol, at=AT_2025, collateral=TDX4_COLL) == Reason.TCB_TOO_OLD
    pol = allowing(
        "UpToDate", min_tcb_eval_number=17, min_tcb_date=datetime(2024, 1, 1, tzinfo=UTC)
    )
    assert verify_evidence(TDX4, policy=pol, at=AT_2025, collateral=TDX4_COLL)


def test_dcap_without_collateral_is_refused_unless_the_policy_waives_it() -> None:
    assert reason_of(TDX4, at=AT_2025) == Reason.TCB_NOT_CHECKED
    assert reason_of(SGX, at=AT_2025) == Reason.TCB_NOT_CHECKED
    c = verify_evidence(TDX4, policy=replace(ANY_ID, require_tcb=False), at=AT_2025)
    assert "tcb_status" not in c.extra and any("TCB status" in s for s in c.not_checked)


def test_collateral_for_another_platform_or_tee_is_refused() -> None:
    assert reason_of(TDX4, at=AT_2025, collateral=SGX_COLL) == Reason.BAD_CHAIN
    assert reason_of(SGX, at=AT_2025, collateral=TDX4_COLL) == Reason.BAD_CHAIN
    assert reason_of(TDX5, at=AT_2026, collateral=TDX4_COLL) == Reason.EXPIRED


def test_collateral_from_a_cache_directory(tmp_path: Path) -> None:
    for name in ("sgx_quote_collateral.json", "dcap_qvl_tdx_quote_v4_collateral.json"):
        (tmp_path / name).write_bytes((DATA / name).read_bytes())
    (tmp_path / "junk.json").write_text("{")
    assert collateral_for(TDX4, tmp_path) == TDX4_COLL
    assert collateral_for(SGX, tmp_path) == SGX_COLL
    assert collateral_for(TDX5, tmp_path) is None
    assert find_collateral(tmp_path, "B0C06F000000", "sgx") is None


# --- finding 3: host-supplied bytes never pick the root ----------------------------------------
def host_root(subject: x509.Name) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime(2020, 1, 1, tzinfo=UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=20000))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def with_pck_chain(quote: bytes, pem: bytes) -> bytes:
    """The v3 quote with its PCK certificate data replaced (that part is not signed)."""
    q = dcap.parse_quote(quote)
    sig = q.signature + q.attest_key + q.qe_report + q.qe_report_sig
    sig += struct.pack("<H", len(q.qe_auth)) + q.qe_auth + struct.pack("<HI", 5, len(pem)) + pem
    return q.signed + struct.pack("<I", len(sig)) + sig


def test_host_made_root_in_the_quote_is_untrusted() -> None:
    certs = x509.load_pem_x509_certificates(dcap.parse_quote(SGX).cert_data)
    _, fake = host_root(certs[-1].subject)  # same name as Intel's root, the host's key
    pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in [*certs[:-1], fake])
    forged = with_pck_chain(SGX, pem)
    assert reason_of(forged, at=AT_2025, collateral=SGX_COLL) == Reason.UNTRUSTED_ROOT
    intel = (DATA / "intel_sgx_root.pem").read_bytes()
    assert (
        reason_of(forged, at=AT_2025, roots=[intel], collateral=SGX_COLL) == Reason.UNTRUSTED_ROOT
    )


def test_host_made_root_in_collateral_is_untrusted() -> None:
    coll = json.loads(SGX_COLL)
    chain = x509.load_pem_x509_certificates(coll["tcb_info_issuer_chain"].encode())
    _, fake = host_root(chain[-1].subject)
    coll["tcb_info_issuer_chain"] = b"".join(
        c.public_bytes(serialization.Encoding.PEM) for c in [*chain[:-1], fake]
    ).decode()
    raw = json.dumps(coll).encode()
    assert reason_of(SGX, at=AT_2025, collateral=raw) == Reason.UNTRUSTED_ROOT


def test_client_trust_not_host_bytes_picks_the_verifier() -> None:
    """A client that pinned a software root refuses a real Intel quote; one that trusts TDX
    refuses an SGX quote; before, the quote's own format chose Intel's root."""
    args = (b"n" * 32, b"k" * 32, b"ctx")
    software_root = host_root(x509.Name.from_rfc4514_string("CN=software platform root"))[1]
    for trust, reason in (
        (software_root, Reason.MALFORMED),
        (HardwareTrust("tdx"), Reason.UNTRUSTED_ROOT),
        (HardwareTrust("snp"), Reason.UNTRUSTED_ROOT),
    ):
        with pytest.raises(EvidenceRejected) as err:
            verify_attestation(SGX, *args, trust, ANY_ID, now=AT_2025)  # type: ignore[arg-type]
        assert err.value.reason == reason, err.value


def test_client_requires_collateral_for_dcap_evidence(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The client's default policy refuses a TDX quote without collateral and accepts it with a
    collateral cache directory. The sample's report_data stands in for the session binding."""
    import privinfer.tee.attestation as attestation

    monkeypatch.setattr(attestation, "report_data", lambda *a: TDX4[48 + 520 : 48 + 584])
    pol = Policy(allowed_measurements=ANY, allowed_signers=ANY)  # TCB defaults
    args = (b"n" * 32, b"k" * 32, b"ctx")
    with pytest.raises(EvidenceRejected) as err:
        verify_attestation(TDX4, *args, HardwareTrust("tdx"), pol, now=AT_2025)
    assert err.value.reason == Reason.TCB_NOT_CHECKED
    (tmp_path / "tdx.json").write_bytes(TDX4_COLL)
    claims = verify_attestation(TDX4, *args, HardwareTrust("tdx", tmp_path), pol, now=AT_2025)
    assert claims.extra["tcb_status"] == "UpToDate"


def test_client_for_hardware_needs_a_measurement_and_keeps_the_trust(tmp_path: Path) -> None:
    from privinfer.errors import InputError
    from privinfer.tee.client import client_for

    trust = HardwareTrust("tdx", collateral=tmp_path)
    with pytest.raises(InputError, match="needs --measurement"):
        client_for("http://127.0.0.1:9", trust=trust, measurement=None)
    mrtd = TDX4[48 + 136 : 48 + 184].hex()
    with client_for("http://127.0.0.1:9", trust=trust, measurement=mrtd) as client:
        assert client.root is trust
        assert client.policy.allowed_measurements == frozenset({bytes.fromhex(mrtd)})
        assert client.policy.require_tcb


def test_host_made_crl_is_refused() -> None:
    """A PCK CRL in the PCK CA's name but signed by another key (say, one that omits a revoked
    leaf) is refused."""
    coll = json.loads(SGX_COLL)
    real = x509.load_der_x509_crl(bytes.fromhex(coll["pck_crl"]))
    key, _ = host_root(real.issuer)
    forged = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(real.issuer)
        .last_update(real.last_update_utc)
        .next_update(real.next_update_utc)  # type: ignore[arg-type]
        .sign(key, hashes.SHA256())
    )
    coll["pck_crl"] = forged.public_bytes(serialization.Encoding.DER).hex()
    assert reason_of(SGX, at=AT_2025, collateral=json.dumps(coll).encode()) == Reason.BAD_CHAIN
