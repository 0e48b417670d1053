"""Per-party stores of pre-shared model weights, written once by the model owner; secure while no
two of the three parties pool their stores (honest majority, semi-honest).

Every weight w, after the same transform `MpcOps.prepare` applies (linear weights transposed), is
encoded at `frac_bits` and split into three additive components w = x0 + x1 + x2 over Z_2^64.
x0 and x1 are expanded from two 32-byte seeds (AES-256-CTR keyed by SHA-256(seed | weight name)),
x2 = w - x0 - x1 is written to disk. Party i holds (x_i, x_{i+1}) like any replicated share:
party 0 keeps both seeds, party 1 seed 1 and the x2 files, party 2 the x2 files and seed 0. Each
party's view is uniformly random and independent of w. Files are 0600 in a 0700 folder; the
manifest names the model, a random share-set id and the SHA-256 of every file, so a store from
another model or another sharing run is refused before any computation.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from privinfer.errors import PrivinferError
from privinfer.models import families
from privinfer.mpc.prf import KeyStream
from privinfer.mpc.ring import DEFAULT_FRAC_BITS, encode
from privinfer.mpc.runtime import N_PARTIES
from privinfer.mpc.shares import RShare

FORMAT = "privinfer-mpc-shares/v1"
MANIFEST = "manifest.json"
SEEDS = "seeds.bin"
ProgressFn = Callable[[str], None]


class ShareStoreError(PrivinferError):
    """A share store is missing, tampered with, or belongs to another model or share set."""


class _Recorder:
    """An `Ops` stand-in that only records what `prepare` is asked for (name, kind, tensor)."""

    name = "record"

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, torch.Tensor]] = []

    def prepare(self, name: str, weight: torch.Tensor, *, kind: str) -> str:
        self.calls.append((name, kind, weight))
        return name

    def __getattr__(self, attr: str) -> Any:  # build() may ask for nothing else
        raise AttributeError(attr)


def prepared_weights(model: Any) -> list[tuple[str, str, torch.Tensor]]:
    """(name, kind, tensor) for every `prepare` call the shared model definition makes."""
    rec = _Recorder()
    model.build(rec)
    return rec.calls


def _transform(w: torch.Tensor, kind: str) -> torch.Tensor:
    w = w.detach().to(torch.float64)
    return w.T.contiguous() if kind == "linear" else w


def _component(seed: bytes, name: str, shape: tuple[int, ...]) -> torch.Tensor:
    key = hashlib.sha256(seed + b"/" + name.encode()).digest()
    return KeyStream(key).draw(shape)


def _write_private(path: Path, data: bytes | memoryview) -> str:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
    finally:
        os.close(fd)
    return hashlib.sha256(data).hexdigest()


def model_config(model: Any) -> tuple[str, dict[str, Any]]:
    """(family name, public config dict) of a loaded LanguageModel or EmbeddingModel."""
    return families.get(model.cfg).name, asdict(model.cfg)


def share_model(
    model: Any,
    model_id: str,
    out_dir: str | os.PathLike[str],
    *,
    frac_bits: int = DEFAULT_FRAC_BITS,
    progress: ProgressFn | None = None,
    cluster_id: bytes | None = None,
) -> str:
    """Write party-0/, party-1/, party-2/ under `out_dir`; returns the new share-set id (hex).
    With `cluster_id`, parties of any other cluster refuse the stores."""
    out = Path(out_dir)
    calls = prepared_weights(model)
    kind, cfg = model_config(model)
    share_set = secrets.token_hex(16)
    seeds = [secrets.token_bytes(32), secrets.token_bytes(32)]
    dirs = [out / f"party-{i}" for i in range(N_PARTIES)]
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)
        os.chmod(d, 0o700)
        if (d / MANIFEST).exists():
            raise ShareStoreError(f"{d} already holds a share store; choose an empty folder.")
    entries: list[list[dict[str, Any]]] = [[] for _ in range(N_PARTIES)]
    seen: dict[int, str] = {}
    for k, (name, wkind, tensor) in enumerate(calls):
        ptr = tensor.data_ptr()
        base = seen.get(ptr)
        if base is not None and wkind == "linear":  # tied head: reuse the embedding's shares
            for i in range(N_PARTIES):
                entries[i].append({"name": name, "kind": wkind, "alias_t": base})
            continue
        seen.setdefault(ptr, name)
        w = encode(_transform(tensor, wkind), frac_bits)
        shape = tuple(w.shape)
        x2 = w - _component(seeds[0], name, shape) - _component(seeds[1], name, shape)
        raw = x2.contiguous().numpy().tobytes()
        del w, x2
        for i in range(N_PARTIES):
            entry: dict[str, Any] = {"name": name, "kind": wkind, "shape": list(shape)}
            if i in (1, 2):
                entry["file"] = f"w{k:04d}.bin"
                entry["sha256"] = _write_private(dirs[i] / entry["file"], raw)
            entries[i].append(entry)
        if progress:
            progress(f"shared {k + 1}/{len(calls)} weights")
    held = {0: seeds, 1: [seeds[1]], 2: [seeds[0]]}
    for i in range(N_PARTIES):
        seed_hash = _write_private(dirs[i] / SEEDS, b"".join(held[i]))
        manifest = {
            "format": FORMAT,
            "model_id": model_id,
            "model_kind": kind,
            "config": cfg,
            "share_set_id": share_set,
            "party": i,
            "frac_bits": frac_bits,
            "cluster_id": cluster_id.hex() if cluster_id else None,
            "seeds_sha256": seed_hash,
            "weights": entries[i],
        }
        _write_private(dirs[i] / MANIFEST, json.dumps(manifest, indent=1).encode())
    return share_set


class PartyStore:
    """One party's loaded, verified weight shares; `share(party, name)` hands out RShares."""

    def __init__(self, folder: str | os.PathLike[str], party_id: int) -> None:
        self.folder = Path(folder)
        path = self.folder / MANIFEST
        if not path.is_file():
            raise ShareStoreError(f"{self.folder} holds no share store (no {MANIFEST}).")
        try:
            m = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError):
            raise ShareStoreError(f"{path} is not a valid share manifest.") from None
        if m.get("format") != FORMAT:
            raise ShareStoreError(f"{path} is not a privinfer share store of format {FORMAT}.")
        if m.get("party") != party_id:
            raise ShareStoreError(
                f"{self.folder} holds party {m.get('party')}'s shares, not party {party_id}'s."
            )
        self.party_id = party_id
        self.model_id: str = m["model_id"]
        self.model_kind: str = m["model_kind"]
        self.config: dict[str, Any] = m["config"]
        self.share_set_id: str = m["share_set_id"]
        self.frac_bits: int = int(m["frac_bits"])
        self.cluster_id: str | None = m.get("cluster_id")
        seed_bytes = self._read(SEEDS, m["seeds_sha256"])
        seeds = [seed_bytes[j : j + 32] for j in range(0, len(seed_bytes), 32)]
        # which seed expands which component, for this party's (x_i, x_{i+1})
        held = {0: (0, 1), 1: (1,), 2: (0,)}[party_id]
        if len(seeds) != len(held) or any(len(x) != 32 for x in seeds):
            raise ShareStoreError(f"{self.folder / SEEDS} has the wrong size.")
        comp_seed = dict(zip(held, seeds, strict=True))
        self._shares: dict[str, RShare] = {}
        self.kinds: dict[str, str] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}
        # column concatenations of weights used together (`MpcOps.linears`), kept across
        # sessions: the weights become views of them, so each is held once and copied once
        self.concat_cache: dict[tuple[int, ...], Any] = {}
        for e in m["weights"]:
            name = e["name"]
            self.kinds[name] = e["kind"]
            if "alias_t" in e:
                base = self._shares[e["alias_t"]]
                self._shares[name] = base.map(lambda t: t.T)
                self.shapes[name] = tuple(base.a.T.shape)
                continue
            shape = tuple(e["shape"])
            comps = []
            for c in (party_id, (party_id + 1) % N_PARTIES):
                if c == 2:
                    comps.append(self._load(e["file"], e["sha256"], shape))
                else:
                    comps.append(_component(comp_seed[c], name, shape))
            self._shares[name] = RShare(comps[0], comps[1], party_id, self.frac_bits)
            self.shapes[name] = shape

    def _load(self, rel: str, sha: str, shape: tuple[int, ...]) -> torch.Tensor:
        """Read a component file into anonymous memory, hashing it in the same pass.

        Not a file mapping: with no swap, file-backed pages are the only ones the kernel (or a
        proactive `pageout` policy such as this machine's DAMON scheme) can drop, and a slow
        decode touches each weight once per token, so mapped shares could be dropped and read
        from disk again every step (the likely cause of the CLI's 145 s prefill and 6 s/token
        against the benchmark's 9.5 s and 2 s in issue 17; see docs/mpc.md)."""
        path = self.folder / rel
        if not path.is_file():
            raise ShareStoreError(f"share file {path} is missing.")
        n = 8 * int(np.prod(shape))
        if path.stat().st_size != n:
            raise ShareStoreError(f"{path} has the wrong size.")
        out = torch.empty(shape, dtype=torch.int64)
        buf = memoryview(out.numpy().reshape(-1).view(np.uint8))
        h, off = hashlib.sha256(), 0
        with open(path, "rb", buffering=0) as f:
            while off < n:
                got = f.readinto(buf[off : min(n, off + (1 << 24))])
                if not got:
                    break
                h.update(buf[off : off + got])
                off += got
        if off != n or h.hexdigest() != sha:
            raise ShareStoreError(
                f"share file {path} does not match its manifest (tampered, or from another share set)."
            )
        return out

    def _verify(self, rel: str, sha: str) -> Path:
        path = self.folder / rel
        if not path.is_file():
            raise ShareStoreError(f"share file {path} is missing.")
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 24):
                h.update(chunk)
        if h.hexdigest() != sha:
            raise ShareStoreError(
                f"share file {path} does not match its manifest (tampered, or from another share set)."
            )
        return path

    def _read(self, rel: str, sha: str) -> bytes:
        return self._verify(rel, sha).read_bytes()

    def __repr__(self) -> str:  # never print share values
        return (
            f"PartyStore(party={self.party_id}, model={self.model_id!r}, weights={len(self.kinds)})"
        )

    def check_cluster(self, cluster_id: bytes) -> None:
        """Refuse to serve a cluster other than the one the shares were made for."""
        if self.cluster_id is not None and self.cluster_id != cluster_id.hex():
            raise ShareStoreError(f"the share store {self.folder} was made for another cluster.")

    def share(self, party_id: int, frac_bits: int, name: str) -> RShare:
        """This party's RShare of the prepared weight `name`."""
        if party_id != self.party_id:
            raise ShareStoreError(f"this store belongs to party {self.party_id}, not {party_id}.")
        if frac_bits != self.frac_bits:
            raise ShareStoreError(
                f"the shares were encoded with {self.frac_bits} fractional bits, not {frac_bits}."
            )
        if name not in self._shares:
            raise ShareStoreError(f"the share store of {self.model_id!r} has no weight {name}.")
        return self._shares[name]  # the same object every session (see `concat_cache`)

    def placeholders(self) -> Mapping[str, torch.Tensor]:
        """Shape-only stand-ins (meta tensors) for building the model definition on this party."""
        out: dict[str, torch.Tensor] = {}
        for name, shape in self.shapes.items():
            kind = self.kinds[name]
            orig = tuple(reversed(shape)) if kind == "linear" else shape
            out[name] = torch.empty(orig, device="meta")
        return out

    @property
    def family(self) -> families.Family:
        """The model family the shares belong to (the manifest's `model_kind`)."""
        try:
            return families.by_name(self.model_kind)
        except PrivinferError as exc:
            raise ShareStoreError(f"{self.folder}: {exc}") from None

    def build_config(self) -> Any:
        """The model's public config, as its family's config class."""
        return self.family.config(self.config)


def stored_components(folder: str | os.PathLike[str]) -> Iterator[tuple[str, np.ndarray]]:
    """(weight name, raw int64 values) of every x2 file of a store (for audits and tests)."""
    m = json.loads((Path(folder) / MANIFEST).read_text(encoding="utf-8"))
    for e in m["weights"]:
        if "file" in e:
            yield e["name"], np.fromfile(Path(folder) / e["file"], dtype=np.int64)
