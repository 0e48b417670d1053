"""Confidential-VM evidence from the Linux configfs TSM interface (TDX and SEV-SNP guests).

Security assumption: the guest kernel is part of the attested VM (its launch is measured into
MRTD/RTMRs or the SNP MEASUREMENT); the CPU signs the report. This module only fetches
evidence; nothing it returns is trusted until the client's verifier (chain -> signature ->
binding -> TCB and measurement policy) accepts it.

Kernel interface (Documentation/ABI/testing/configfs-tsm, kernel 6.7+): `mkdir
/sys/kernel/config/tsm/report/NAME` creates a report entry; write up to 64 bytes of report data
to `inblob`; read the report from `outblob` (a TDX quote for provider `tdx_guest`, an SNP
attestation report for `sev_guest`, whose certificates, if the host provides them, are in
`auxblob` as a GUID table); `generation` counts the writes to the entry, so a reader that sees
it advance by more than its own writes knows another writer raced it and retries.

Interface used by `tee serve --platform`: `detect_platform()` names the platform present
("tdx", "snp", "sgx-gramine" or "software"); `hardware_provider(name)` returns a provider whose
`platform` is that name and whose `report(report_data) -> Evidence` gives the evidence bytes,
their type (as `privinfer tee verify --type` names it) and any certificates.
"""

from __future__ import annotations

import os
import secrets
import struct
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from privinfer.errors import SecurityError

TSM_REPORT = Path("/sys/kernel/config/tsm/report")
GRAMINE_DEV = Path("/dev/attestation")
PROVIDERS = {"tdx_guest": "tdx", "sev_guest": "snp"}  # kernel provider -> platform name
PLATFORMS = ("tdx", "snp", "sgx-gramine", "software")
REPORT_DATA_LEN = 64
SNP_REPORT_LEN = 0x4A0
# SEV-SNP certificate table GUIDs (GHCB spec, MSG_REPORT_REQ cert_table).
SNP_CERT_GUIDS = {
    uuid.UUID("63da758d-e664-4564-adc5-f4b93be8accd"): "vcek",
    uuid.UUID("a8074bc2-a25a-483e-aae6-39c045a0b8a1"): "vlek",
    uuid.UUID("4ab7b379-bbac-4fe4-a02f-05aef327c782"): "ask",
    uuid.UUID("c0b406a4-a803-4952-9743-3fb6014cd0ae"): "ark",
}


@dataclass(frozen=True)
class Evidence:
    """Evidence as a provider returns it: bytes, their type ("tdx", "snp", "sgx"), and DER
    certificates that came with it (SNP: VCEK/ASK/ARK from `auxblob`, when the host has them)."""

    data: bytes
    evidence_type: str
    certs: tuple[bytes, ...] = ()


class ConfigFs:
    """The file operations on configfs, one method each (tests replace them with a kernel stand-in)."""

    def mkdir(self, path: Path) -> None:
        os.mkdir(path)

    def rmdir(self, path: Path) -> None:
        os.rmdir(path)

    def read(self, path: Path) -> bytes:
        with open(path, "rb") as fh:
            return fh.read()

    def write(self, path: Path, data: bytes) -> None:
        with open(path, "wb") as fh:
            fh.write(data)


def parse_snp_certs(aux: bytes) -> tuple[bytes, ...]:
    """DER certificates from an SNP cert table (GUID, offset u32, length u32; all-zero entry ends)."""
    certs: list[bytes] = []
    for pos in range(0, len(aux) - 23, 24):
        guid, off, size = aux[pos : pos + 16], *struct.unpack_from("<II", aux, pos + 16)
        if guid == bytes(16):
            break
        if uuid.UUID(bytes_le=guid) in SNP_CERT_GUIDS and off + size <= len(aux) and size:
            certs.append(aux[off : off + size])
    return tuple(certs)


class TsmProvider:
    """TDX quotes or SEV-SNP reports from `/sys/kernel/config/tsm/report` (one entry per request).

    `platform` is "tdx" or "snp" (from the kernel's `provider`); `report()` retries up to
    `attempts` times when `generation` shows a concurrent writer, and checks the evidence carries
    the report data it was given before handing it out.
    """

    def __init__(
        self, root: Path | str = TSM_REPORT, *, fs: ConfigFs | None = None, attempts: int = 3
    ) -> None:
        self.root, self.fs, self.attempts = Path(root), fs or ConfigFs(), attempts
        self.platform = self._probe()
        self.evidence_type = self.platform

    @staticmethod
    def available(root: Path | str = TSM_REPORT) -> bool:
        return Path(root).is_dir()

    def _entry(self) -> Path:
        path = self.root / f"privinfer-{os.getpid()}-{secrets.token_hex(6)}"
        try:
            self.fs.mkdir(path)
        except OSError as exc:
            raise SecurityError(
                f"cannot create a configfs TSM report entry under {self.root} "
                f"({exc.strerror or type(exc).__name__}; not a TDX/SNP guest, or no permission?)"
            ) from None
        return path

    def _provider(self, entry: Path) -> str:
        name = self.fs.read(entry / "provider").decode(errors="replace").strip()
        if name not in PROVIDERS:
            raise SecurityError(f"configfs TSM provider {name!r} is not one privinfer verifies")
        return PROVIDERS[name]

    def _probe(self) -> str:
        entry = self._entry()
        try:
            return self._provider(entry)
        finally:
            self.fs.rmdir(entry)

    def report(self, report_data: bytes) -> Evidence:
        """Evidence binding these 64 bytes of report data (raises SecurityError when the kernel
        refuses, keeps racing, or returns evidence for other report data)."""
        if len(report_data) != REPORT_DATA_LEN:
            raise SecurityError("report_data must be exactly 64 bytes")
        for _ in range(self.attempts):
            entry = self._entry()
            try:
                found = self._once(entry, report_data)
            finally:
                self.fs.rmdir(entry)
            if found is not None:
                return found
        raise SecurityError(
            f"configfs TSM report raced by another writer {self.attempts} times; giving up"
        )

    def _once(self, entry: Path, report_data: bytes) -> Evidence | None:
        if self._provider(entry) != self.platform:
            raise SecurityError("configfs TSM provider changed under privinfer")
        try:
            before = int(self.fs.read(entry / "generation"))
            self.fs.write(entry / "inblob", report_data)
            out = self.fs.read(entry / "outblob")
            after = int(self.fs.read(entry / "generation"))
            aux = self.fs.read(entry / "auxblob") if self.platform == "snp" else b""
        except (OSError, ValueError) as exc:
            raise SecurityError(
                f"the kernel refused to produce a report ({getattr(exc, 'strerror', None) or type(exc).__name__})"
            ) from None
        if after != before + 1:
            return None  # someone else wrote to the entry between our write and our read
        if _report_data_of(out, self.platform) != report_data:
            raise SecurityError("the kernel returned evidence for other report data")
        return Evidence(out, self.platform, parse_snp_certs(aux) if aux else ())

    def quote(self, identity: Any, report_data: bytes, *, now: datetime | None = None) -> bytes:
        """`QuoteProvider` form: the evidence bytes (the identity is the VM's, set by the CPU)."""
        return self.report(report_data).data


def _report_data_of(out: bytes, platform: str) -> bytes:
    """The report data inside evidence from the kernel (parsed, not yet verified)."""
    if platform == "snp":
        if len(out) != SNP_REPORT_LEN:
            raise SecurityError(f"SNP report is {len(out)} bytes, expected {SNP_REPORT_LEN}")
        return out[0x50:0x90]
    from privinfer.tee.evidence.dcap import TEE_TDX, parse_quote
    from privinfer.tee.evidence.tdx import claims_from_body

    q = parse_quote(out)  # EvidenceRejected on a malformed quote
    if q.tee_type != TEE_TDX:
        raise SecurityError("the kernel's tdx_guest provider returned a non-TDX quote")
    return claims_from_body(q.body).report_data


class GramineReportProvider:
    """SGX DCAP quotes from Gramine's /dev/attestation, in the `report()` form."""

    platform = "sgx-gramine"
    evidence_type = "sgx"

    def __init__(self, dev: Path | str = GRAMINE_DEV) -> None:
        from privinfer.tee.providers import GramineProvider

        self._gramine = GramineProvider(Path(dev))

    def report(self, report_data: bytes) -> Evidence:
        return Evidence(self._gramine.quote(None, report_data), "sgx")  # type: ignore[arg-type]

    def quote(self, identity: Any, report_data: bytes, *, now: datetime | None = None) -> bytes:
        return self.report(report_data).data


def detect_platform(
    tsm_root: Path | str = TSM_REPORT,
    gramine_dev: Path | str = GRAMINE_DEV,
    fs: ConfigFs | None = None,
) -> str:
    """The platform present: "tdx" or "snp" (configfs TSM), "sgx-gramine", else "software".

    A TSM tree whose probe fails (no provider loaded, or no permission to create an entry) counts
    as absent; `hardware_provider(name)` says why in that case."""
    if TsmProvider.available(tsm_root):
        try:
            return TsmProvider(tsm_root, fs=fs).platform
        except SecurityError:
            pass
    from privinfer.tee.providers import GramineProvider

    if GramineProvider.available(Path(gramine_dev)):
        return "sgx-gramine"
    return "software"


def hardware_provider(
    platform: str,
    *,
    tsm_root: Path | str = TSM_REPORT,
    gramine_dev: Path | str = GRAMINE_DEV,
    fs: ConfigFs | None = None,
) -> TsmProvider | GramineReportProvider:
    """The provider for a hardware `platform` ("tdx", "snp", "sgx-gramine"); SecurityError when
    that platform is not what this machine offers. "software" is the caller's (it needs the
    software Platform)."""
    if platform == "sgx-gramine":
        from privinfer.tee.providers import GramineProvider

        if not GramineProvider.available(Path(gramine_dev)):
            raise SecurityError(
                f"--platform sgx-gramine: no Gramine attestation interface at {gramine_dev}"
            )
        return GramineReportProvider(gramine_dev)
    if platform not in ("tdx", "snp"):
        raise SecurityError(
            f"unknown hardware platform {platform!r} (choose from {', '.join(PLATFORMS)})"
        )
    if not TsmProvider.available(tsm_root):
        raise SecurityError(f"--platform {platform}: no configfs TSM interface at {tsm_root}")
    provider = TsmProvider(tsm_root, fs=fs)
    if provider.platform != platform:
        raise SecurityError(
            f"--platform {platform}: this guest's TSM provider is {provider.platform}"
        )
    return provider
