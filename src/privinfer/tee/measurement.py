"""Enclave identity: SHA-384 measurement of code, config and model, plus signer, product, SVN, debug.

Security assumption: a measurement only means something when the party that computes it is the
one that loads exactly these bytes. On the software platform the enclave measures itself after
an isolated launch and refuses to serve if it loaded anything outside the measured set
(tee/launch.py); the identity is as trustworthy as the OS user separation and root (docs/tee.md). All hashes are SHA-384 (48 bytes); every field is length-prefixed and every hash is
domain-separated so no two different inputs share an encoding.

Canonical identity layout (big-endian, 248 bytes, `EnclaveIdentity.to_bytes`):

    0    48  measurement  SHA-384(lp("privinfer-measurement-v1") lp(code) lp(config) lp(model))
    48   48  signer       SHA-384 of the signer's public key (DER SubjectPublicKeyInfo)
    96    2  product_id   u16
    98    2  svn          u16 (security version)
    100   4  flags        u32, bit 0 = debug; other bits must be zero
    104  48  code         SHA-384 over (relative path, SHA-384(content)) of each source file, sorted;
                           for a served enclave combined with the runtime hash (`combine_code`)
    152  48  config       SHA-384 of the canonical JSON of the enclave config
    200  48  model        SHA-384 over (name, size, SHA-384(content)) of each model file, sorted
"""

from __future__ import annotations

import hashlib
import hmac
import json
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

DIGEST_LEN = 48
IDENTITY_LEN = 248
CHUNK = 1 << 20
FLAG_DEBUG = 1
_IDENTITY = struct.Struct(">48s48sHHI48s48s48s")
assert _IDENTITY.size == IDENTITY_LEN


def lp(data: bytes) -> bytes:
    """Length-prefix `data` with a big-endian u32 (the framing used for every hashed field)."""
    return struct.pack(">I", len(data)) + data


def _sha384_file(path: Path) -> tuple[bytes, int]:
    h = hashlib.sha384()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            size += len(chunk)
    return h.digest(), size


def package_root() -> Path:
    """Directory of the installed `privinfer` package (the default code to measure)."""
    return Path(__file__).resolve().parent.parent


def hash_code(root: Path | None = None, files: Iterable[str] | None = None) -> bytes:
    """Hash the enclave's source: each file's relative POSIX path and content, in sorted order.

    `files` are paths relative to `root` (default: every ``*.py`` under the privinfer package).
    """
    root = Path(root) if root is not None else package_root()
    if files is None:
        rels = [p.relative_to(root).as_posix() for p in root.rglob("*.py") if p.is_file()]
    else:
        rels = [Path(r).as_posix() for r in files]
    rels = sorted(set(rels))
    h = hashlib.sha384(lp(b"privinfer-code-v1"))
    h.update(struct.pack(">I", len(rels)))
    for rel in rels:
        digest, size = _sha384_file(root / rel)
        h.update(lp(rel.encode("utf-8")) + struct.pack(">Q", size) + digest)
    return h.digest()


def canonical_json(config: Mapping[str, Any]) -> bytes:
    """Canonical JSON: sorted keys, no whitespace, UTF-8, no NaN/Infinity."""
    text = json.dumps(
        config, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    return text.encode("utf-8")


def hash_config(config: Mapping[str, Any]) -> bytes:
    """SHA-384 of the enclave config's canonical JSON, domain-separated."""
    return hashlib.sha384(lp(b"privinfer-config-v1") + lp(canonical_json(config))).digest()


def hash_model(files: Sequence[Path | str]) -> bytes:
    """Hash model files (streamed in 1 MiB chunks): each file's base name, size and SHA-384."""
    paths = [Path(p) for p in files]
    names = [p.name for p in paths]
    if len(set(names)) != len(names):
        raise ValueError("model files must have distinct base names")
    entries = []
    for name, path in zip(names, paths, strict=True):
        digest, size = _sha384_file(path)
        entries.append((name, size, digest))
    return hash_model_digests(entries)


def hash_model_digests(entries: Sequence[tuple[str, int, bytes]]) -> bytes:
    """`hash_model` from (base name, size, SHA-384 of content) per file, e.g. for bytes in memory."""
    names = [e[0] for e in entries]
    if len(set(names)) != len(names):
        raise ValueError("model files must have distinct base names")
    h = hashlib.sha384(lp(b"privinfer-model-v1"))
    h.update(struct.pack(">I", len(entries)))
    for name, size, digest in sorted(entries):
        h.update(lp(name.encode("utf-8")) + struct.pack(">Q", size) + digest)
    return h.digest()


def combine_measurement(code: bytes, config: bytes, model: bytes) -> bytes:
    """The measurement: SHA-384 over the three component hashes, in fixed order."""
    body = lp(b"privinfer-measurement-v1") + lp(code) + lp(config) + lp(model)
    return hashlib.sha384(body).digest()


def signer_id(public_key: PublicKeyTypes | bytes) -> bytes:
    """Signer identity (MRSIGNER-like): SHA-384 of the signer public key's DER SPKI encoding."""
    if isinstance(public_key, bytes):
        der = public_key
    else:
        der = public_key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    return hashlib.sha384(lp(b"privinfer-signer-v1") + lp(der)).digest()


@dataclass(frozen=True)
class EnclaveIdentity:
    """Who the enclave is. `measurement` must equal `combine_measurement(code, config, model)`."""

    measurement: bytes
    signer: bytes
    product_id: int
    svn: int
    debug: bool
    code: bytes
    config: bytes
    model: bytes

    def __post_init__(self) -> None:
        for name in ("measurement", "signer", "code", "config", "model"):
            v = getattr(self, name)
            if not isinstance(v, bytes) or len(v) != DIGEST_LEN:
                raise ValueError(f"identity field {name} must be {DIGEST_LEN} bytes")
        for name in ("product_id", "svn"):
            v = getattr(self, name)
            if not isinstance(v, int) or not 0 <= v <= 0xFFFF:
                raise ValueError(f"identity field {name} must be a u16")
        expect = combine_measurement(self.code, self.config, self.model)
        if not hmac.compare_digest(expect, self.measurement):
            raise ValueError("measurement does not match its components")

    @property
    def components(self) -> dict[str, bytes]:
        return {"code": self.code, "config": self.config, "model": self.model}

    def to_bytes(self) -> bytes:
        """Canonical 248-byte encoding (layout in the module docstring)."""
        flags = FLAG_DEBUG if self.debug else 0
        return _IDENTITY.pack(
            self.measurement,
            self.signer,
            self.product_id,
            self.svn,
            flags,
            self.code,
            self.config,
            self.model,
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> EnclaveIdentity:
        """Parse the canonical encoding; raise ValueError on wrong length, flags or measurement."""
        if len(data) != IDENTITY_LEN:
            raise ValueError("identity must be exactly 248 bytes")
        m, s, pid, svn, flags, code, config, model = _IDENTITY.unpack(data)
        if flags & ~FLAG_DEBUG:
            raise ValueError("identity has unknown flag bits set")
        return cls(m, s, pid, svn, bool(flags & FLAG_DEBUG), code, config, model)

    def with_svn(self, svn: int) -> EnclaveIdentity:
        """A copy at another security version (same code, config, model and signer)."""
        return EnclaveIdentity(
            self.measurement,
            self.signer,
            self.product_id,
            svn,
            self.debug,
            self.code,
            self.config,
            self.model,
        )


def measure(
    *,
    config: Mapping[str, Any],
    model_files: Sequence[Path | str],
    signer_public_key: PublicKeyTypes | bytes,
    product_id: int,
    svn: int,
    debug: bool = False,
    code_root: Path | None = None,
    code_files: Iterable[str] | None = None,
) -> EnclaveIdentity:
    """Measure an enclave: code (default: the privinfer package), config and model files."""
    code = hash_code(code_root, code_files)
    cfg = hash_config(config)
    model = hash_model(model_files)
    return EnclaveIdentity(
        measurement=combine_measurement(code, cfg, model),
        signer=signer_id(signer_public_key),
        product_id=product_id,
        svn=svn,
        debug=debug,
        code=code,
        config=cfg,
        model=model,
    )


def combine_code(package: bytes, runtime: bytes) -> bytes:
    """The `code` component: the privinfer source hash and the runtime hash (tee/launch.py)."""
    return hashlib.sha384(lp(b"privinfer-code-runtime-v1") + lp(package) + lp(runtime)).digest()


def _signed_body(identity: EnclaveIdentity) -> bytes:
    flags = FLAG_DEBUG if identity.debug else 0
    return lp(b"privinfer-enclave-signature-v1") + struct.pack(
        ">48sHHI", identity.measurement, identity.product_id, identity.svn, flags
    )


@dataclass(frozen=True)
class SignerProof:
    """A signer's ECDSA P-384 signature over an identity's measurement, product, SVN and flags
    (SIGSTRUCT-like), with the signer's public key (DER SubjectPublicKeyInfo)."""

    public_der: bytes
    signature: bytes

    def verifies(self, identity: EnclaveIdentity) -> bool:
        """True when the key hashes to `identity.signer` and signed exactly this identity."""
        if not hmac.compare_digest(signer_id(self.public_der), identity.signer):
            return False
        try:
            key = serialization.load_der_public_key(self.public_der)
            if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp384r1":
                return False
            key.verify(self.signature, _signed_body(identity), ec.ECDSA(hashes.SHA384()))
        except (InvalidSignature, ValueError):
            return False
        return True


def sign_identity(key: ec.EllipticCurvePrivateKey, identity: EnclaveIdentity) -> SignerProof:
    """The signer's proof for `identity` (whose `signer` must be `signer_id` of this key)."""
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if signer_id(der) != identity.signer:
        raise ValueError("the identity names another signer")
    return SignerProof(der, key.sign(_signed_body(identity), ec.ECDSA(hashes.SHA384())))
