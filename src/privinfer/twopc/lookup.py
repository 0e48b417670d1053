"""Embedding lookup by 1-out-of-N OT: the client's private token id selects a row of the model
owner's private table, and the two get additive shares of it (semi-honest; computational
security of IKNP and the fixed-key AES TCCR hash, 128-bit; exact, no statistical error).

Per token, with N = vocab and m = ceil(log2 N) random OTs in which the owner sends: the client
sends d = id xor c (m bits, c its random choices: uniform to the owner); the owner draws a
fresh uniform row s, and for every entry x derives the pad P_x = xor_k H(key_k[x_k xor d_k],
tweak(token, k, x)), expands it to `dim` words G(P_x) and sends y_x = T[x] - s + G(P_x) for all
N entries; the client holds the keys key_k[c_k], which are exactly those of entry x = id,
and keeps y_id - G(P_id) = T[id] - s. Every other entry uses at least one key the client lacks
(uniform pad). The owner keeps s. Cost per token: m bits up, N dim 8 bytes down (SmolLM2:
226 MB, MiniLM: 94 MB), 2 rounds for all tokens' choices plus one flight per token.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from privinfer.net.peer import PeerError
from privinfer.twopc.aes import fixed_key_permute, tccr_hash_permuted

if TYPE_CHECKING:
    from privinfer.twopc.runtime import TwoParty

CHUNK_ENTRIES = 1 << 13  # table rows hashed and expanded at a time (bounds the owner's memory)


def _pads(keys: np.ndarray, entries: np.ndarray, start: int, m: int) -> np.ndarray:
    """xor over k of H(keys[e, k], start + entry m + k) for keys (E, m, 16): (E, 16) uint8."""
    tweaks = entries.astype(np.uint64)[:, None] * np.uint64(m) + np.arange(m, dtype=np.uint64)
    h = tccr_hash_permuted(fixed_key_permute(keys.reshape(-1, 16)), tweaks.reshape(-1) + start)
    return np.bitwise_xor.reduce(h.reshape(-1, m, 16), axis=1)


def _expand(pads: np.ndarray, dim: int, start: int) -> np.ndarray:
    """(E, 16) pads -> (E, dim) uint64 words (TCCR hashes under fresh tweaks)."""
    blocks = (dim + 1) // 2
    px = np.repeat(fixed_key_permute(pads), blocks, axis=0)
    t = np.arange(px.shape[0], dtype=np.uint64) + np.uint64(start)
    words = np.ascontiguousarray(tccr_hash_permuted(px, t)).view(np.uint64)
    return words.reshape(pads.shape[0], 2 * blocks)[:, :dim]


def ot_lookup(
    party: TwoParty,
    table: np.ndarray | None,
    ids: np.ndarray | None,
    n_tokens: int,
    vocab: int,
    dim: int,
) -> np.ndarray:
    """Shares [n_tokens, dim] of the rows table[ids]: party 0 passes its ring table
    [vocab, dim], party 1 its ids (n_tokens,)."""
    m = max(1, int(np.ceil(np.log2(vocab))))
    n = n_tokens * m
    party.ot.reserve(n, 0)
    tw = party.ot.pad_tweaks
    out = np.zeros((n_tokens, dim), np.uint64)
    if party.pid == 1:
        assert ids is not None
        c, mc = party.ot.take_recv(n)
        bits = ((ids.astype(np.uint64)[:, None] >> np.arange(m, dtype=np.uint64)) & 1).astype(
            np.uint8
        )
        party.send_only(np.packbits(bits.reshape(-1) ^ c, bitorder="little"))
        for j in range(n_tokens):
            t_pad, t_exp = tw.take_start(vocab * m), tw.take_start(vocab * ((dim + 1) // 2))
            got = party.exchange(b"")
            if len(got) != 8 * vocab * dim:
                raise PeerError(party.peer, "lookup payload has the wrong length")
            i = int(ids[j])
            pad = _pads(mc[j * m : (j + 1) * m][None], np.array([i]), t_pad, m)
            y = np.frombuffer(got, np.uint64, count=dim, offset=8 * i * dim)
            blocks = (dim + 1) // 2
            out[j] = y - _expand(pad, dim, t_exp + i * blocks)[0]
        return out
    assert table is not None
    m0, m1 = party.ot.take_send(n)
    got = party.exchange(b"")
    if len(got) != (n + 7) // 8:
        raise PeerError(party.peer, "lookup choice payload has the wrong length")
    d = np.unpackbits(np.frombuffer(got, np.uint8), bitorder="little")[:n].reshape(n_tokens, m)
    keys = np.stack([m0, m1], axis=1).reshape(n_tokens, m, 2, 16)
    pos = np.arange(m, dtype=np.uint64)
    blocks = (dim + 1) // 2
    for j in range(n_tokens):
        t_pad, t_exp = tw.take_start(vocab * m), tw.take_start(vocab * blocks)
        s = party.private_random_u64(dim)
        out[j] = s
        y = np.empty((vocab, dim), np.uint64)
        for lo in range(0, vocab, CHUNK_ENTRIES):
            x = np.arange(lo, min(vocab, lo + CHUNK_ENTRIES), dtype=np.uint64)
            sel = ((x[:, None] >> pos) & 1).astype(np.int64) ^ d[j][None, :]  # key index
            k = keys[j][np.arange(m)[None, :], sel]  # (E, m, 16)
            g = _expand(_pads(k, x, t_pad, m), dim, t_exp + lo * blocks)
            y[lo : lo + x.size] = table[lo : lo + x.size] - s + g
        party.send_only(y)
    return out
