"""The configfs TSM provider against a stand-in configfs tree that serves real TDX and SEV-SNP
evidence: a real directory, with `FakeKernel` playing the kernel's part on each file operation
(creating the attribute files, counting writes in `generation`, producing `outblob`)."""

from __future__ import annotations

import struct
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from privinfer.errors import SecurityError
from privinfer.tee.evidence.detect import verify_evidence
from privinfer.tee.policy import ANY, Policy
from privinfer.tee.tsm import (
    ConfigFs,
    TsmProvider,
    detect_platform,
    hardware_provider,
    parse_snp_certs,
)

DATA = Path(__file__).parents[1] / "data" / "attestation"
TDX = (DATA / "dcap_qvl_tdx_quote_v4.dat").read_bytes()  # production quote, zero-padded buffer
TDX_RD = TDX[48 + 520 : 48 + 584]
OTHER_TDX = (DATA / "tdx_quote_v5.dat").read_bytes()  # what a concurrent writer gets
SNP = (DATA / "snp_attestation.bin").read_bytes()
SNP_RD = SNP[0x50:0x90]
VCEK = (DATA / "vcek.der").read_bytes()
ASK_ARK = [
    c.public_bytes(Encoding.DER)
    for c in x509.load_pem_x509_certificates((DATA / "ask_ark_milan.pem").read_bytes())
]


def cert_table(certs: dict[str, bytes]) -> bytes:
    """An SNP cert table as the kernel's auxblob carries it (GHCB MSG_REPORT_REQ layout)."""
    guids = {
        "vcek": "63da758d-e664-4564-adc5-f4b93be8accd",
        "ask": "4ab7b379-bbac-4fe4-a02f-05aef327c782",
        "ark": "c0b406a4-a803-4952-9743-3fb6014cd0ae",
    }
    head_len = 24 * (len(certs) + 1)
    head, body = b"", b""
    for name, der in certs.items():
        head += uuid.UUID(guids[name]).bytes_le + struct.pack("<II", head_len + len(body), len(der))
        body += der
    return head + bytes(24) + body


class FakeKernel(ConfigFs):
    """The kernel's side of configfs-tsm on a plain directory.

    `reports` maps inblob -> outblob (real evidence); `races` is how many times a concurrent
    writer slips in between the provider's inblob write and its outblob read.
    """

    def __init__(
        self, provider: str, reports: dict[bytes, bytes], aux: bytes = b"", races: int = 0
    ):
        self.provider, self.reports, self.aux, self.races = provider, reports, aux, races
        self.entries_made = 0

    def mkdir(self, path: Path) -> None:
        super().mkdir(path)
        self.entries_made += 1
        (path / "provider").write_text(self.provider + "\n")
        (path / "generation").write_text("0\n")
        for name in ("inblob", "outblob", "auxblob"):
            (path / name).write_bytes(b"")

    def rmdir(self, path: Path) -> None:
        for child in path.iterdir():
            child.unlink()
        super().rmdir(path)

    def write(self, path: Path, data: bytes) -> None:
        if path.name != "inblob" or len(data) > 64:
            raise OSError(22, "Invalid argument")
        super().write(path, data)
        gen = int((path.parent / "generation").read_text()) + 1
        (path.parent / "generation").write_text(f"{gen}\n")
        (path.parent / "outblob").write_bytes(self.reports.get(data, b""))
        (path.parent / "auxblob").write_bytes(self.aux)

    def read(self, path: Path) -> bytes:
        if path.name == "outblob" and self.races > 0:
            self.races -= 1  # another process writes its own report data first
            mine = (path.parent / "inblob").read_bytes()
            other = next(k for k in self.reports if k != mine)
            self.write(path.parent / "inblob", other)
        return super().read(path)


def tsm_root(tmp_path: Path) -> Path:
    root = tmp_path / "tsm" / "report"
    root.mkdir(parents=True)
    return root


POLICY = Policy(allowed_measurements=ANY, allowed_signers=ANY, require_tcb=False, allow_debug=True)
AT = datetime(2026, 6, 1, tzinfo=UTC)


def test_tdx_report_is_the_real_quote_and_verifies(tmp_path: Path) -> None:
    kernel = FakeKernel("tdx_guest", {TDX_RD: TDX})
    root = tsm_root(tmp_path)
    provider = TsmProvider(root, fs=kernel)
    ev = provider.report(TDX_RD)
    assert (provider.platform, ev.evidence_type, ev.data, ev.certs) == ("tdx", "tdx", TDX, ())
    c = verify_evidence(
        ev.data, evidence_type=ev.evidence_type, policy=POLICY, at=AT, expected_report_data=TDX_RD
    )
    assert c.extra["padding_bytes"] == 70
    assert list(root.iterdir()) == []  # every entry is removed again


def test_snp_report_with_certificates_from_auxblob_verifies(tmp_path: Path) -> None:
    aux = cert_table({"vcek": VCEK, "ask": ASK_ARK[0], "ark": ASK_ARK[1]})
    kernel = FakeKernel("sev_guest", {SNP_RD: SNP}, aux=aux)
    ev = TsmProvider(tsm_root(tmp_path), fs=kernel).report(SNP_RD)
    assert ev.evidence_type == "snp" and ev.certs == (VCEK, *ASK_ARK)
    c = verify_evidence(
        ev.data, certs=list(ev.certs), policy=POLICY, at=AT, expected_report_data=SNP_RD
    )
    assert c.debug  # the sample was made with a debug guest policy


def test_generation_race_is_detected_and_retried(tmp_path: Path) -> None:
    kernel = FakeKernel("tdx_guest", {TDX_RD: TDX, bytes(64): OTHER_TDX}, races=2)
    ev = TsmProvider(tsm_root(tmp_path), fs=kernel).report(TDX_RD)
    assert ev.data == TDX and kernel.entries_made == 1 + 3  # probe + two raced tries + one clean


def test_persistent_race_gives_up(tmp_path: Path) -> None:
    kernel = FakeKernel("tdx_guest", {TDX_RD: TDX, bytes(64): OTHER_TDX}, races=10)
    with pytest.raises(SecurityError, match="raced"):
        TsmProvider(tsm_root(tmp_path), fs=kernel, attempts=3).report(TDX_RD)


def test_evidence_for_other_report_data_is_refused(tmp_path: Path) -> None:
    kernel = FakeKernel("tdx_guest", {bytes(64): TDX})
    with pytest.raises(SecurityError, match="other report data"):
        TsmProvider(tsm_root(tmp_path), fs=kernel).report(bytes(64))


def test_unknown_provider_and_bad_input(tmp_path: Path) -> None:
    with pytest.raises(SecurityError, match="not one privinfer verifies"):
        TsmProvider(tsm_root(tmp_path), fs=FakeKernel("arm_cca_guest", {}))
    provider = TsmProvider(tsm_root(tmp_path / "b"), fs=FakeKernel("tdx_guest", {}))
    with pytest.raises(SecurityError, match="64 bytes"):
        provider.report(b"short")


def test_detect_platform(tmp_path: Path) -> None:
    root = tsm_root(tmp_path)
    nothing = tmp_path / "absent"
    assert detect_platform(root, nothing, fs=FakeKernel("sev_guest", {})) == "snp"
    assert detect_platform(root, nothing, fs=FakeKernel("tdx_guest", {})) == "tdx"
    dev = tmp_path / "attestation"
    dev.mkdir()
    (dev / "quote").write_bytes(b"")
    (dev / "user_report_data").write_bytes(b"")
    assert detect_platform(nothing, dev) == "sgx-gramine"
    assert detect_platform(nothing, nothing) == "software"


def test_hardware_provider_checks_the_platform_asked_for(tmp_path: Path) -> None:
    root = tsm_root(tmp_path)
    assert hardware_provider("tdx", tsm_root=root, fs=FakeKernel("tdx_guest", {})).platform == "tdx"
    with pytest.raises(SecurityError, match="provider is snp"):
        hardware_provider("tdx", tsm_root=root, fs=FakeKernel("sev_guest", {}))
    with pytest.raises(SecurityError, match="no configfs TSM"):
        hardware_provider("snp", tsm_root=tmp_path / "absent")
    with pytest.raises(SecurityError, match="no Gramine"):
        hardware_provider("sgx-gramine", gramine_dev=tmp_path / "absent")


def test_cert_table_parser_ignores_unknown_guids_and_stops_at_the_zero_entry() -> None:
    table = cert_table({"vcek": VCEK})
    assert parse_snp_certs(table) == (VCEK,)
    assert parse_snp_certs(bytes(24) + table) == ()


def test_tee_serve_platforms_have_providers_and_threat_rows() -> None:
    from privinfer.tee.isolation import PLATFORMS, PROVIDERS

    assert set(PROVIDERS) == {"software", "tdx", "snp", "sgx-gramine"}
    assert set(PROVIDERS) <= set(PLATFORMS)


@pytest.mark.skipif(Path("/sys/kernel/config/tsm/report").exists(), reason="a real TSM guest")
def test_enclave_refuses_a_hardware_platform_this_machine_is_not() -> None:
    from privinfer.errors import SecurityError
    from privinfer.tee.enclave import _hardware_quotes

    assert _hardware_quotes("software") is None
    for kind in ("tdx", "snp"):
        with pytest.raises(SecurityError, match="configfs TSM"):
            _hardware_quotes(kind)


def test_enclave_takes_a_tsm_provider_for_tdx(monkeypatch, tmp_path) -> None:
    """The enclave's `--quotes tdx` gets the configfs provider (here the stand-in kernel)."""
    import privinfer.tee.tsm as tsm
    from privinfer.tee.enclave import _hardware_quotes

    made = {}

    def fake(kind: str, **kw):
        made["kind"] = kind
        return "provider"

    monkeypatch.setattr(tsm, "hardware_provider", fake)
    assert _hardware_quotes("tdx") == "provider" and made["kind"] == "tdx"
