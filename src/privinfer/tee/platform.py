"""Software TEE platform: root CA, attestation key, quoting, sealing-key derivation, monotonic counters.

Security assumption: the platform directory (mode 0700, files 0600) is readable only by the
enclave's user. That protects against the network, the client, and host processes that cannot
read that directory. It does NOT protect against root on the machine (or anyone who can read the
directory): they can sign quotes for any identity, derive every sealing key and rewind counters.
Real hardware (SGX/TDX/SEV-SNP) replaces this module; the evidence shape and checks stay.

Key hierarchy (created by `init_platform`):
    root CA     ECDSA P-384, self-signed X.509, pinned by verifiers (ca/root_key.pem may be moved
                offline after init: it is only needed to certify a new attestation key)
    AK          ECDSA P-384, X.509 leaf certified by the root (limited validity), signs quotes
    sealing     32 random bytes; HKDF-SHA256 derives per-identity, per-SVN, per-label keys
    counters    counters.json, replaced atomically (write, fsync, rename, fsync dir), only increase
"""

from __future__ import annotations

import contextlib
import enum
import fcntl
import json
import os
import re
import secrets
import stat
import struct
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.x509.oid import NameOID

from privinfer.errors import SecurityError
from privinfer.tee.evidence.software import (
    HEADER,
    MAGIC,
    REPORT_DATA_LEN,
    SIG_ALG_ECDSA_P384_SHA384,
    VERSION,
)
from privinfer.tee.measurement import EnclaveIdentity, SignerProof, lp

ROOT_CERT = "root_cert.pem"
ROOT_KEY = "ca/root_key.pem"
AK_KEY = "ak_key.pem"
AK_CERT = "ak_cert.pem"
SEALING_SECRET = "sealing_secret.bin"
COUNTERS = "counters.json"
COUNTERS_LOCK = "counters.lock"
_COUNTER_NAME = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
MAX_COUNTER = (1 << 63) - 1


class PlatformError(SecurityError):
    """The software platform is missing, unsafe (permissions) or refused a request."""


class KeyPolicy(enum.IntEnum):
    """Which identity a sealing key is bound to (like SGX KEYPOLICY).

    MEASUREMENT (the default everywhere): only the same measurement can derive it. SIGNER
    (MRSIGNER-like): any identity of the same signer and product at an SVN >= the blob's, and
    only with a `SignerProof`: the signer's signature over that very identity, whose public key
    hashes to the identity's `signer` field (which the quote carries)."""

    MEASUREMENT = 1
    SIGNER = 2


def _write_private(path: Path, data: bytes, mode: int = 0o600) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _mkdir_private(path: Path) -> None:
    path.mkdir(mode=0o700, parents=False, exist_ok=False)
    os.chmod(path, 0o700)


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "privinfer software platform"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def make_ak_cert(
    root_key: ec.EllipticCurvePrivateKey,
    root_cert: x509.Certificate,
    ak_public: ec.EllipticCurvePublicKey,
    not_before: datetime,
    validity: timedelta,
) -> x509.Certificate:
    """Certify an attestation key: X.509 leaf, not a CA, digitalSignature only."""
    ski = x509.SubjectKeyIdentifier.from_public_key(root_key.public_key())
    return (
        x509.CertificateBuilder()
        .subject_name(_name("privinfer attestation key"))
        .issuer_name(root_cert.subject)
        .public_key(ak_public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_before + validity)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False),
            critical=True,
        )
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), False)
        .sign(root_key, hashes.SHA384())
    )


def init_platform(
    directory: Path | str,
    *,
    now: datetime | None = None,
    root_validity: timedelta = timedelta(days=3650),
    ak_validity: timedelta = timedelta(days=365),
    export_root_to: Path | str | None = None,
) -> Platform:
    """Create a new software platform in `directory` (must not exist). Returns it loaded.

    `export_root_to`, if given, receives a copy of the root certificate PEM (0644) for clients.
    """
    d = Path(directory)
    now = now or datetime.now(UTC)
    start = now - timedelta(minutes=5)
    _mkdir_private(d)
    _mkdir_private(d / "ca")
    root_key = ec.generate_private_key(ec.SECP384R1())
    ski = x509.SubjectKeyIdentifier.from_public_key(root_key.public_key())
    root_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("privinfer software platform root"))
        .issuer_name(_name("privinfer software platform root"))
        .public_key(root_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + root_validity)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .sign(root_key, hashes.SHA384())
    )
    ak_key = ec.generate_private_key(ec.SECP384R1())
    ak_cert = make_ak_cert(root_key, root_cert, ak_key.public_key(), start, ak_validity)
    root_pem = root_cert.public_bytes(serialization.Encoding.PEM)
    _write_private(d / ROOT_KEY, _pem_key(root_key))
    _write_private(d / ROOT_CERT, root_pem)
    _write_private(d / AK_KEY, _pem_key(ak_key))
    _write_private(d / AK_CERT, ak_cert.public_bytes(serialization.Encoding.PEM))
    _write_private(d / SEALING_SECRET, secrets.token_bytes(32))
    _write_private(d / COUNTERS, b"{}")
    _write_private(d / COUNTERS_LOCK, b"")
    if export_root_to is not None:
        _write_private(Path(export_root_to), root_pem, 0o644)
    return Platform(d)


class Platform:
    """A loaded software platform. Refuses to load if its secrets are readable by others, or (with
    `owner`) if the directory or a secret belongs to another user than `owner`."""

    def __init__(self, directory: Path | str, *, owner: int | None = None) -> None:
        self.directory = Path(directory)
        if owner is not None and self.directory.stat().st_uid != owner:
            raise PlatformError("the software platform directory belongs to another user")
        for rel in (AK_KEY, SEALING_SECRET, COUNTERS):
            p = self.directory / rel
            try:
                st = p.stat()
            except FileNotFoundError:
                raise PlatformError(f"software platform file missing: {rel}") from None
            if stat.S_IMODE(st.st_mode) & 0o077:
                raise PlatformError(f"software platform file {rel} is readable by others")
            if owner is not None and st.st_uid != owner:
                raise PlatformError(f"software platform file {rel} belongs to another user")
        self.root_cert = x509.load_pem_x509_certificate((self.directory / ROOT_CERT).read_bytes())
        self.ak_cert = x509.load_pem_x509_certificate((self.directory / AK_CERT).read_bytes())
        key = serialization.load_pem_private_key((self.directory / AK_KEY).read_bytes(), None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise PlatformError("attestation key is not an EC key")
        self._ak = key
        self._sealing_secret = (self.directory / SEALING_SECRET).read_bytes()
        if len(self._sealing_secret) != 32:
            raise PlatformError("sealing secret has the wrong length")

    def root_cert_pem(self) -> bytes:
        """The root certificate that clients pin."""
        return self.root_cert.public_bytes(serialization.Encoding.PEM)

    def quote(
        self, identity: EnclaveIdentity, report_data: bytes, *, now: datetime | None = None
    ) -> bytes:
        """Sign `identity` and 64 bytes of `report_data` into a quote (layout: evidence/software.py)."""
        if len(report_data) != REPORT_DATA_LEN:
            raise ValueError("report_data must be exactly 64 bytes")
        now = now or datetime.now(UTC)
        ms = int(now.timestamp() * 1000)
        body = (
            HEADER.pack(MAGIC, VERSION, SIG_ALG_ECDSA_P384_SHA384)
            + identity.to_bytes()
            + report_data
            + struct.pack(">Q", ms)
        )
        r, s = decode_dss_signature(self._ak.sign(body, ec.ECDSA(hashes.SHA384())))
        sig = r.to_bytes(48, "big") + s.to_bytes(48, "big")
        certs = [self.ak_cert, self.root_cert]
        chain = bytes([len(certs)])
        for c in certs:
            chain += lp(c.public_bytes(serialization.Encoding.DER))
        return body + sig + chain

    def derive_sealing_key(
        self,
        identity: EnclaveIdentity,
        *,
        key_policy: KeyPolicy = KeyPolicy.MEASUREMENT,
        svn: int,
        label: bytes,
        signer_proof: SignerProof | None = None,
    ) -> bytes:
        """Derive a 32-byte sealing key for `identity` at security version `svn` (EGETKEY-like).

        `svn` may not exceed the identity's SVN, so an enclave can derive keys of its own and older
        versions, never of newer ones. The key binds the policy, the measurement (MEASUREMENT) or
        signer and product id (SIGNER), the debug flag, `svn` and `label` (the blob's purpose).
        SIGNER keys need `signer_proof`, the signer's signature over this identity: a signer id
        alone is a public value any enclave could claim.
        """
        if not 0 <= svn <= identity.svn:
            raise PlatformError("requested sealing SVN is above the enclave's SVN")
        policy = KeyPolicy(key_policy)
        if policy is KeyPolicy.SIGNER and (
            signer_proof is None or not signer_proof.verifies(identity)
        ):
            raise PlatformError("SIGNER sealing needs the signer's signature over this identity")
        bound = identity.measurement if policy is KeyPolicy.MEASUREMENT else identity.signer
        info = (
            lp(b"privinfer-seal-key-v1")
            + struct.pack(">BHH?", policy, identity.product_id, svn, identity.debug)
            + lp(bound)
            + lp(label)
        )
        return HKDF(hashes.SHA256(), 32, b"privinfer-sealing-v1", info).derive(self._sealing_secret)

    @contextlib.contextmanager
    def _counter_lock(self) -> Iterator[None]:
        fd = os.open(self.directory / COUNTERS_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _load_counters(self) -> dict[str, int]:
        try:
            data = json.loads((self.directory / COUNTERS).read_bytes())
        except (OSError, ValueError):
            raise PlatformError("counter store unreadable") from None
        if not isinstance(data, dict) or not all(
            isinstance(k, str) and type(v) is int and 0 <= v <= MAX_COUNTER for k, v in data.items()
        ):
            raise PlatformError("counter store malformed")
        return data

    @staticmethod
    def _check_name(name: str) -> None:
        if not _COUNTER_NAME.match(name):
            raise ValueError("counter name must match [A-Za-z0-9._:-]{1,128}")

    def counter_read(self, name: str) -> int:
        """Current value of monotonic counter `name` (0 if never incremented)."""
        self._check_name(name)
        with self._counter_lock():
            return self._load_counters().get(name, 0)

    def counter_increment(self, name: str) -> int:
        """Increase counter `name` by one, durably, and return the new value."""
        self._check_name(name)
        with self._counter_lock():
            counters = self._load_counters()
            value = counters.get(name, 0) + 1
            if value > MAX_COUNTER:
                raise PlatformError("counter exhausted")
            counters[name] = value
            payload = json.dumps(counters, sort_keys=True).encode()
            tmp = self.directory / f".{COUNTERS}.{os.getpid()}.tmp"
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            _write_private(tmp, payload)
            os.replace(tmp, self.directory / COUNTERS)
            dfd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
            return value
