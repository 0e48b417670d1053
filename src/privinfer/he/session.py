"""The key holder (client) side of an HE session: keys, input upload, refresh, outputs, tokens.

Security assumption: semi-honest parties. The client alone holds the CKKS secret key; it
encrypts its own input rows (the embedding of its tokens, computed from the published embedding
table), answers refreshes of sigma=40-masked polynomials (`he.refresh`), creates Galois keys for
public rotation steps the server asks for, and decrypts only what the server hands it as output:
the final embedding, the next-token logits and one range-check scalar. Nothing here logs data.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from privinfer.engines.plain import sample_token
from privinfer.errors import InputError, SecurityError
from privinfer.he import packing, wire
from privinfer.he.ckks import CkksContext, CkksParams
from privinfer.he.refresh import LocalRefreshClient
from privinfer.models import families
from privinfer.models.ops import Sampler


class KeyHolder(Protocol):
    """What the server may ask of the client (in-process or over the wire)."""

    def public_bundle(self) -> dict[str, bytes]: ...

    def galois(self, steps: Sequence[int]) -> tuple[list[int], bytes]: ...

    def refresh(self, payload: bytes) -> bytes: ...

    def upload(self, meta: dict[str, Any], rows: torch.Tensor | None) -> bytes: ...

    def reveal(self, meta: dict[str, Any], payload: bytes) -> torch.Tensor | None: ...

    def choose(self, meta: dict[str, Any], payload: bytes) -> int | None: ...


def pack_meta(meta: dict[str, Any], payload: bytes) -> bytes:
    blob = json.dumps(meta).encode()
    return struct.pack("<I", len(blob)) + blob + payload


def unpack_meta(data: bytes) -> tuple[dict[str, Any], bytes]:
    if len(data) < 4:
        raise InputError("Truncated HE message.")
    (n,) = struct.unpack_from("<I", data)
    if 4 + n > len(data):
        raise InputError("Truncated HE message.")
    try:
        meta = json.loads(data[4 : 4 + n].decode())
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise InputError("Malformed HE message header.") from None
    if not isinstance(meta, dict):
        raise InputError("Malformed HE message header.")
    return meta, data[4 + n :]


@dataclass
class HeClient:
    """The client's state: secret-key context, sampler, the tokens it chose, the output."""

    ctx: CkksContext
    sampler: Sampler = field(default_factory=Sampler)
    stop_ids: tuple[int, ...] = ()
    max_new_tokens: int = 0
    chosen: list[int] = field(default_factory=list)
    output: torch.Tensor | None = None
    check_total: float | None = None
    next_rows: Any = None  # callable(token, position) -> torch rows of the next input

    @classmethod
    def create(cls, params: CkksParams, **kw: Any) -> HeClient:
        return cls(CkksContext.create_client(params), **kw)

    def __post_init__(self) -> None:
        self._refresh = LocalRefreshClient(self.ctx)
        self._step = 0
        self._gen: torch.Generator | None = None

    # ---- requests the server makes -----------------------------------------------------
    def public_bundle(self) -> dict[str, bytes]:
        return self.ctx.export_public()

    def galois(self, steps: Sequence[int]) -> tuple[list[int], bytes]:
        slots = self.ctx.params.slots
        if any(not isinstance(s, int) or not 0 < s < slots for s in steps):
            raise InputError("Rotation steps must be integers in (0, slots).")
        return self.ctx.galois_batch(steps)

    def refresh(self, payload: bytes) -> bytes:
        return self._refresh.refresh(payload)

    def encrypt_rows(self, meta: dict[str, Any], rows: torch.Tensor) -> bytes:
        """Encrypt rows [start, start + n) of a `tokens`-row token-minor packing (secret-key
        encryptions sent with a seed for their uniform half)."""
        tokens, start = int(meta["tokens"]), int(meta["start"])
        x = rows.detach().to(torch.float64).numpy()
        if start + x.shape[0] > tokens:
            raise InputError(
                f"{start + x.shape[0]} tokens do not fit this HE packing of {tokens} tokens."
            )
        full = np.zeros((tokens, x.shape[1]))
        full[start : start + x.shape[0]] = x
        vecs = packing.pack_tokens(full, self.ctx.params.slots, tokens)
        return wire.pack_blobs(self.ctx, [self.ctx.encrypt_seeded(v) for v in vecs])

    def upload(self, meta: dict[str, Any], rows: torch.Tensor | None) -> bytes:
        if rows is None:
            raise InputError("The in-process client needs the input rows.")
        return self.encrypt_rows(meta, rows)

    def _decrypt(self, meta: dict[str, Any], payload: bytes) -> np.ndarray:
        cts = wire.unpack_ciphertexts(self.ctx, payload)
        tokens, cols = int(meta["tokens"]), int(meta["cols"])
        vecs = [self.ctx.decrypt(ct) for ct in cts[: int(meta["n_out"])]]
        full = packing.unpack_tokens(vecs, tokens, cols, tokens)
        if len(cts) > int(meta["n_out"]):
            self.check_total = float(self.ctx.decrypt(cts[-1])[0])
            limit = int(meta["overflow_checks"]) + 0.5
            if not np.isfinite(self.check_total) or self.check_total > limit:
                raise SecurityError(
                    "An HE approximation saw inputs outside its calibrated range; the result "
                    "would be wrong and was discarded."
                )
        start = int(meta["start"])
        return full[start : start + int(meta["rows"])]

    def reveal(self, meta: dict[str, Any], payload: bytes) -> torch.Tensor:
        self.output = torch.as_tensor(self._decrypt(meta, payload), dtype=torch.float32)
        return self.output

    def choose(self, meta: dict[str, Any], payload: bytes) -> int | None:
        """Decrypt the logits, pick the next token; return its upload position or None (stop)."""
        logits = torch.as_tensor(self._decrypt(meta, payload)[-1], dtype=torch.float32)
        if not self.sampler.greedy and self._gen is None:
            self._gen = torch.Generator()
            self._gen.manual_seed(self.sampler.seed if self.sampler.seed is not None else 0)
        tok = sample_token(logits, self.sampler, self._gen)
        if tok in self.stop_ids:
            return None
        self.chosen.append(tok)
        return None if len(self.chosen) >= self.max_new_tokens else tok


def client_rows(model: Any, ids: Sequence[int]) -> torch.Tensor:
    """The client's input rows from the published embedding tables (the family's
    `input_rows`: BERT word + position + type embeddings and the embedding LayerNorm; LLaMA the
    token embeddings)."""
    fam = families.get(model.cfg)
    if fam.input_rows is None:
        raise InputError(f"HE mode does not run {fam.name} models.")
    return fam.input_rows(model.cfg, model.weights, ids)


class LocalKeyHolder:
    """In-process client: the server's requests become direct calls (bytes still serialised)."""

    def __init__(self, client: HeClient) -> None:
        self.client = client

    def public_bundle(self) -> dict[str, bytes]:
        return self.client.public_bundle()

    def galois(self, steps: Sequence[int]) -> tuple[list[int], bytes]:
        return self.client.galois(steps)

    def refresh(self, payload: bytes) -> bytes:
        return self.client.refresh(payload)

    def upload(self, meta: dict[str, Any], rows: torch.Tensor | None) -> bytes:
        return self.client.upload(meta, rows)

    def reveal(self, meta: dict[str, Any], payload: bytes) -> torch.Tensor:
        return self.client.reveal(meta, payload)

    def choose(self, meta: dict[str, Any], payload: bytes) -> int | None:
        return self.client.choose(meta, payload)
