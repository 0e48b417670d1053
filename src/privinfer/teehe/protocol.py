"""What client, HE server and refresh enclave agree on: messages, the key-release body, identity.

Security assumption: everything here crosses the untrusted HE server. Client -> server messages
(he.transport framing over mutual TLS, `certs`): ATST (client nonce), KREL (the client's
X25519 key and one AES-GCM record holding the secret key, opaque to the server), SUBM (task and
encrypted input), FTCH (a job id). Server -> enclave (mutual TLS, `enclave-certs`): the same
ATST and KREL, relayed, then KEYS and RFSH of the session, DONE. The key release is end to end
between client and enclave: the server sees only the quote, public keys and the record.

The refresh enclave is its own measured program: its code is the privinfer top level, `he`,
`tee`, `net` and `teehe` sources plus the runtime (interpreter, standard library, the listed
distributions and its bootstrap, tee/launch.py); its config is `ENCLAVE_CONFIG`; it has no
model, so its model component is the hash of no files. `expected_identity()` is what a client
computes from its own copy of the code.
"""

from __future__ import annotations

import struct
from pathlib import Path

from privinfer.errors import SecurityError
from privinfer.tee.measurement import (
    EnclaveIdentity,
    combine_code,
    combine_measurement,
    hash_code,
    hash_config,
    hash_model,
    package_root,
    signer_id,
)

PROTOCOL = "privinfer-tee+he-v1"
MODULE = "privinfer.teehe.enclave"
CODE_PACKAGES = ("he", "net", "tee", "teehe")
# tee's measured distributions plus SEAL's binding; torch is listed (measured) but never loaded.
DISTRIBUTIONS = (
    "cffi", "cryptography", "gguf", "jinja2", "markupsafe", "numpy", "pyyaml", "setuptools",
    "tenseal", "tokenizers", "torch", "tqdm", "typing-extensions", "zstandard",
)  # fmt: skip
ENCLAVE_CONFIG = {"protocol": PROTOCOL, "sigma_min": 40, "session_idle_s": 600}
PRODUCT_ID = 2
SVN = 1
UNSIGNED_SIGNER = b"privinfer-unsigned-refresh-enclave-v1"
SESSION_ID_LEN = 16
_MAGIC_KEY, _MAGIC_ACK = b"PIKR\x01", b"PIKA\x01"


def context(session_id: bytes) -> bytes:
    """The attestation context: the protocol and this session's id (bound into report_data)."""
    return PROTOCOL.encode() + b"|" + session_id


def code_files(root: Path | None = None) -> list[str]:
    """The refresh enclave's measured source files."""
    root = Path(root) if root is not None else package_root()
    files = [f for f in ("__init__.py", "errors.py") if (root / f).is_file()]
    for sub in CODE_PACKAGES:
        files += [p.relative_to(root).as_posix() for p in (root / sub).rglob("*.py") if p.is_file()]
    return sorted(files)


def expected_identity(debug: bool = False) -> EnclaveIdentity:
    """The refresh enclave's identity from this copy of the code and runtime."""
    from privinfer.tee.launch import bootstrap_for, runtime_digest

    runtime = runtime_digest(bootstrap_for(MODULE), DISTRIBUTIONS)
    code = combine_code(hash_code(None, code_files()), runtime)
    cfg, model = hash_config(ENCLAVE_CONFIG), hash_model([])
    return EnclaveIdentity(
        measurement=combine_measurement(code, cfg, model),
        signer=signer_id(UNSIGNED_SIGNER),
        product_id=PRODUCT_ID,
        svn=SVN,
        debug=debug,
        code=code,
        config=cfg,
        model=model,
    )


def _lp(data: bytes | bytearray) -> bytes:
    return struct.pack(">I", len(data)) + bytes(data)


def pack_key_release(params: bytes, secret: bytearray) -> bytearray:
    """The plaintext of the key-release record: magic, CKKS parameters, secret key."""
    out = bytearray(_MAGIC_KEY) + _lp(params) + struct.pack(">I", len(secret))
    out += secret
    return out


def unpack_key_release(body: bytearray) -> tuple[bytes, bytearray]:
    """(parameters, secret key) of a key-release plaintext; refuses anything else."""
    try:
        if bytes(body[:5]) != _MAGIC_KEY:
            raise ValueError
        (n,) = struct.unpack_from(">I", body, 5)
        params = bytes(body[9 : 9 + n])
        (m,) = struct.unpack_from(">I", body, 9 + n)
        if 13 + n + m != len(body):
            raise ValueError
    except (ValueError, struct.error):
        raise SecurityError("Malformed key release.") from None
    return params, bytearray(body[13 + n :])


def pack_ack(he_session: bytes) -> bytes:
    """The enclave's answer to a key release: the CKKS session id its public keys define."""
    return _MAGIC_ACK + he_session


def unpack_ack(body: bytes) -> bytes:
    if len(body) != 5 + SESSION_ID_LEN or body[:5] != _MAGIC_ACK:
        raise SecurityError("The refresh enclave's key-release answer is malformed.")
    return body[5:]
