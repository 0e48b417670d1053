"""Enclave-side model store: seal the model into the data dir, unseal it into memory, load it from a memfd.

Security assumption: runs only inside the enclave process (it derives sealing keys from the
platform directory). The data directory is host-controlled and untrusted: it holds the sealed
blob and public metadata (name, size, SHA-384); a lying metadata file only makes unsealing fail.
The plaintext model exists in this process's memory only (an anonymous memfd, never a file).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

from privinfer.errors import PrivinferError
from privinfer.tee.measurement import EnclaveIdentity, hash_model_digests
from privinfer.tee.platform import KeyPolicy, Platform
from privinfer.tee.protocol import identity_from_model_hash
from privinfer.tee.sealing import SealingError, seal_file, unseal_file_to_memory

SEALED_MODEL = "model.sealed"
MODEL_META = "model.json"
PURPOSE = "model"


def log(msg: str) -> None:
    """Operational log line on stderr: never called with request or response content."""
    sys.stderr.write(f"privinfer-enclave: {msg}\n")
    sys.stderr.flush()


def _sha384_file(path: Path) -> tuple[bytes, int]:
    h, size = hashlib.sha384(), 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return h.digest(), size


def _read_meta(data_dir: Path) -> dict[str, Any] | None:
    try:
        meta = json.loads((data_dir / MODEL_META).read_text())
        return {"name": str(meta["name"]), "size": int(meta["size"]), "sha384": str(meta["sha384"])}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _identity(meta: dict[str, Any], config: dict[str, Any], debug: bool) -> EnclaveIdentity:
    digest = bytes.fromhex(meta["sha384"])
    return identity_from_model_hash(
        hash_model_digests([(meta["name"], meta["size"], digest)]), config, debug=debug
    )


def _seal_from_source(
    platform: Platform, data_dir: Path, source: Path, config: dict[str, Any], debug: bool
) -> dict[str, Any]:
    digest, size = _sha384_file(source)
    meta = {"name": source.name, "size": size, "sha384": digest.hex()}
    seal_file(
        platform,
        _identity(meta, config, debug),
        source,
        data_dir / SEALED_MODEL,
        purpose=PURPOSE,
        key_policy=KeyPolicy.MEASUREMENT,
    )
    tmp = data_dir / f".{MODEL_META}.tmp"
    tmp.write_text(json.dumps(meta))
    os.replace(tmp, data_dir / MODEL_META)
    log("sealed the model into the data directory")
    return meta


def open_model(
    platform: Platform,
    data_dir: Path,
    config: dict[str, Any],
    *,
    source: Path | None,
    debug: bool,
) -> tuple[bytearray, dict[str, Any], EnclaveIdentity]:
    """Unseal the model (sealing it from `source` first if needed); returns bytes, meta, identity."""
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    meta = _read_meta(data_dir)
    if source is not None:
        digest, size = _sha384_file(source)
        fresh = {"name": source.name, "size": size, "sha384": digest.hex()}
        if meta != fresh or not (data_dir / SEALED_MODEL).is_file():
            meta = _seal_from_source(platform, data_dir, source, config, debug)
    if meta is None:
        raise PrivinferError("no sealed model in the data directory and no model source given")
    for attempt in range(2):
        identity = _identity(meta, config, debug)
        try:
            data = unseal_file_to_memory(
                platform, identity, data_dir / SEALED_MODEL, purpose=PURPOSE
            )
            break
        except (SealingError, OSError):
            # Another code/config measurement sealed it (or it is damaged): re-seal from the source.
            if attempt or source is None:
                raise PrivinferError("the sealed model cannot be opened by this enclave") from None
            meta = _seal_from_source(platform, data_dir, source, config, debug)
    if hashlib.sha384(data).hexdigest() != meta["sha384"] or len(data) != meta["size"]:
        raise PrivinferError("the unsealed model does not match its recorded hash")
    return data, meta, identity


def load_model_from_memory(name: str, data: bytearray) -> Any:
    """Build a loaded decoder from GGUF bytes via an anonymous memfd: nothing touches the disk."""
    from privinfer.models.families import load_weights
    from privinfer.models.loaded import LoadedDecoder

    fd = os.memfd_create("privinfer-model", os.MFD_CLOEXEC)
    try:
        view = memoryview(data)
        off = 0
        while off < len(view):
            off += os.write(fd, view[off : off + (8 << 20)])
        w = load_weights(Path(f"/proc/self/fd/{fd}"))
    finally:
        os.close(fd)
    if w.family.task != "generate":
        raise PrivinferError(f"the enclave serves generation; {w.family.name} models embed")
    return LoadedDecoder(name, w.cfg, w.weights, w.tokenizer, Path(name))
