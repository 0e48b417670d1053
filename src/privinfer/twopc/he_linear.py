"""Linear layers by HE: the owner's plaintext weight times the client's encrypted share, returned
as fresh additive shares mod 2^64 (Cheetah-style coefficient encoding in BFV, no rotations).

Threat model: semi-honest 2PC. Party 0 (server, model owner) holds the weight W in plaintext;
party 1 (client) holds the BFV secret key of its session. What each party learns:
- the server: the client's ciphertexts only (RLWE, 128-bit), i.e. nothing of x;
- the client: at each output coefficient x W + r mod t with r uniform mod t, the other
  coefficients never reach it (only c1 and the useful c0 coefficients travel), and the
  ciphertext itself is re-randomised with a fresh public-key encryption of zero and its
  noise flooded by 2^112, so what reaches the client is within statistical distance 2^-56
  per reply of one computed without W (circuit privacy; `stat_bits`);
- both: the public shapes and the layout (which follows from them).
W never leaves the server in any form except inside products with the client's ciphertexts.

Protocol (t = 2^52, so t divides 2^64): the client encrypts x1 mod t; the server adds x0 mod t,
giving Enc(x mod t) for the signed value x, multiplies in W, masks with r, floods, switches
down and replies; the client decrypts s1 = x W + r mod t, the server keeps s0 = -r. Since
|x W| < 2^50, one OT lifts the shares to Z_2^64 as trunc.py lifts its wrap: after adding
2^50, s0 + s1 = v + e t with e = msb(s0) OR msb(s1) (`ot.shared_choice`, 1 round).
Result: exact shares of x @ encode(W) (2f fraction bits) whenever |x @ W| < 2^50, i.e. |y| <
2^18 at f = 16; beyond that the value is wrong by a multiple of 2^52 (no error is raised: the
range is a public parameter, as elsewhere in twopc). 3 rounds: client's ciphertexts, the
reply, the lift. Offline: the session's key exchange (the client's public key, one flight),
and `HeLinear.prepare` (server only, no communication): the weight plaintexts and the reply
sanitizers. Weights must satisfy |w| 2^f < 2^24, the PUBLIC bound the flooding is sized for
(InputError otherwise). Parameters and their derivation: `twopc/bfv.py`, docs/mpc-he.md.
"""

from __future__ import annotations

import math
import struct
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

from privinfer.errors import InputError
from privinfer.net.peer import PeerError
from privinfer.twopc import bfv, ot
from privinfer.twopc.ring import encode

if TYPE_CHECKING:
    from privinfer.twopc.runtime import TwoParty

STAT_BITS_PER_REPLY = 56  # 2^-56 per reply: <= 2^-40 over 65,536 replies
WEIGHT_BITS = 24  # public bound on the encoded weights: |w| < 2^24 (= 256 at f = 16)
LIFT_BITS = bfv.T_BITS - 2  # |x W| < 2^50
_MASK_T = np.uint64(bfv.T - 1)
_HALF_T = np.uint64(bfv.T >> 1)
_OFFSET = np.uint64(1 << LIFT_BITS)
# Cost model of `plan` (seconds on this project's 2-core machine; 1 MB counted as 0.2 s, about
# a 40 Mbit/s link: bytes weigh more than CPU, as the targets do)
_S_PLAIN, _S_MUL, _S_IN, _S_OUT = 1.3e-3, 0.5e-3, 12e-3, 20e-3
BYTE_COST_S = 2e-7  # default weight of one byte, in seconds
_IN_CT_BYTES = 188_500
_PT_BYTES = 3 * 8 * bfv.N  # an NTT plaintext at the top level
POOL_LIMIT = 2048  # sanitizers `prepare` keeps at most per session (384 KiB each: 768 MiB)


@dataclass(frozen=True)
class Layout:
    """Cheetah's coefficient packing: each ciphertext holds r rows x ni inputs at coefficient
    rho ni mi + kappa; each weight plaintext ni x mi at mu ni + ni - 1 - kappa; the product's
    coefficient rho ni mi + mu ni + ni - 1 is row rho's dot product with column mu
    (r ni mi <= N, so the negacyclic wrap lands below every useful coefficient)."""

    rows: int
    n: int
    m: int
    r: int
    ni: int
    mi: int

    @property
    def blocks(self) -> tuple[int, int, int]:
        """(row blocks, input blocks, output blocks)."""
        return (-(-self.rows // self.r), -(-self.n // self.ni), -(-self.m // self.mi))

    def positions(self) -> np.ndarray:
        """The useful coefficients of a reply, row-major over (rho, mu)."""
        rho = np.arange(self.r)[:, None] * (self.ni * self.mi)
        return (rho + np.arange(self.mi)[None, :] * self.ni + self.ni - 1).reshape(-1)

    def costs(self) -> tuple[int, int, int, int]:
        """(input ciphertexts, output ciphertexts, plaintexts, products)."""
        b, j, o = self.blocks
        return b * j, b * o, j * o, b * j * o


def _cost(lay: Layout, byte_s: float) -> float:
    cin, cout, pts, muls = lay.costs()
    nbytes = cin * _IN_CT_BYTES + cout * bfv.reply_size(lay.r * lay.mi)
    return pts * _S_PLAIN + muls * _S_MUL + cin * _S_IN + cout * _S_OUT + nbytes * byte_s


@lru_cache(maxsize=256)
def plan(rows: int, n: int, m: int, byte_s: float = BYTE_COST_S) -> Layout:
    """The cheapest layout under the cost model, a byte weighing `byte_s` seconds (public: a
    function of the shapes and of that parameter only)."""
    best: Layout | None = None
    for r in sorted({-(-rows // k) for k in range(1, rows + 1)}):
        if r > bfv.N:
            continue
        for ni in sorted({-(-n // k) for k in range(1, n + 1)}):
            if r * ni > bfv.N:
                continue
            lay = Layout(rows, n, m, r, ni, min(m, bfv.N // (r * ni)))
            if stat_bits(lay) < STAT_BITS_PER_REPLY:
                continue
            if best is None or _cost(lay, byte_s) < _cost(best, byte_s):
                best = lay
    if best is None:
        raise InputError("the layer is too wide for the HE linear layer's parameters.")
    return best


class _Session:
    """One party's HE state for one TwoParty session (keys made once, at first use)."""

    def __init__(self, party: TwoParty) -> None:
        self.ctx = bfv.BfvContext()
        self.client: bfv.BfvClient | None = None
        self.server: bfv.BfvServer | None = None
        self.pool: list = []  # the server's sanitizers made ahead: (ciphertext, mask)
        with party.offline_phase():
            if party.pid == 1:
                self.client = bfv.BfvClient(self.ctx)
                party.exchange(self.client.public_key_bytes())
            else:
                self.server = bfv.BfvServer(self.ctx, party.exchange(b""), party.peer)

    def fill(self, party: TwoParty, count: int) -> None:
        """Add `count` sanitizers (mask, re-randomise, flood; input-independent) to the pool."""
        assert self.server is not None
        if count <= 0:
            return
        masks = _draw_masks(party, count)
        for k in range(count):
            noise = party.private_random_u64(2 * bfv.N).reshape(bfv.N, 2)
            self.pool.append((self.server.sanitizer(masks[k], bfv.MAX_FLOOD_BITS, noise), masks[k]))

    def take_sanitizers(self, party: TwoParty, count: int) -> list:
        """`count` sanitizers from the pool (made now if it runs short)."""
        if len(self.pool) < count:
            self.fill(party, count - len(self.pool))
        out, self.pool[:] = self.pool[:count], self.pool[count:]
        return out


class HeLinear:
    """`LinearBackend` by BFV (see the module docstring): shares of x @ encode(W, f) at 2f
    fraction bits, exact while |x @ W| < 2^50."""

    name = "he"

    def __init__(self, cache_bytes: int = 2 << 30, byte_cost_s: float = BYTE_COST_S) -> None:
        """`cache_bytes`: the most memory the server's weight-plaintext cache may hold (NTT
        plaintexts, 192 KiB each; least recently used first out; 0 disables it). Cached
        weights must not change in place. `byte_cost_s`: what one byte on the wire weighs
        against one CPU second when choosing layouts (both parties must use the same value:
        2e-7, about a 40 Mbit/s link, by default; smaller for loopback or a fast LAN)."""
        self.byte_cost_s = byte_cost_s
        self._sessions: weakref.WeakKeyDictionary[TwoParty, _Session] = weakref.WeakKeyDictionary()
        self._cache: OrderedDict[tuple, tuple[np.ndarray, list]] = OrderedDict()
        self._cache_limit = cache_bytes
        self._cache_used = 0

    def prepare(self, party: TwoParty, weight: np.ndarray, rows: int) -> None:
        """Server only, offline, no communication: encode `weight` for inputs of `rows` rows
        (cached) and make the sanitizers (masked, flooded encryptions of zero) one such call
        uses, ahead of the input: what that call would otherwise do online."""
        if party.pid != 0:
            raise InputError("only the weight's owner (party 0) prepares it.")
        with party.op("linear"), party.offline_phase():
            n, m = np.shape(weight)
            sess, lay = self._session(party), plan(rows, n, m, self.byte_cost_s)
            self._plaintexts(sess, lay, weight, party.f)
            sess.fill(party, min(lay.costs()[1], POOL_LIMIT - len(sess.pool)))

    def _plaintexts(self, sess: _Session, lay: Layout, weight: np.ndarray, f: int) -> list:
        key = (id(weight), f, lay)
        hit = self._cache.get(key)
        if hit is not None and hit[0] is weight:
            self._cache.move_to_end(key)
            return hit[1]
        w = encode(weight, f).view(np.int64)
        if int(np.abs(w).max()) >= 1 << WEIGHT_BITS:
            raise InputError("the weights are too large for the HE linear layer (|w| 2^f < 2^24).")
        pts = _weight_plaintexts(sess.ctx, lay, w)
        size = _PT_BYTES * sum(p is not None for p in pts)
        if size <= self._cache_limit:
            while self._cache_used + size > self._cache_limit:
                _, (_, old) = self._cache.popitem(last=False)
                self._cache_used -= _PT_BYTES * sum(p is not None for p in old)
            self._cache[key] = (weight, pts)
            self._cache_used += size
        return pts

    def _session(self, party: TwoParty) -> _Session:
        s = self._sessions.get(party)
        if s is None:
            s = self._sessions[party] = _Session(party)
        return s

    def matmul(
        self, party: TwoParty, x: np.ndarray, weight: np.ndarray | None, out_features: int
    ) -> np.ndarray:
        """This party's uint64 shares of x @ encode(weight, f), shape [rows, out_features]."""
        x = np.asarray(x)
        if x.dtype != np.uint64 or x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
            raise InputError("x must be a non-empty [rows, in_features] uint64 share array.")
        if out_features < 1:
            raise InputError("out_features must be positive.")
        if (weight is None) != (party.pid == 1):
            raise InputError("party 0 passes the weight and party 1 passes None.")
        rows, n = x.shape
        if weight is not None and np.shape(weight) != (n, out_features):
            raise InputError("the weight must have shape [in_features, out_features].")
        with party.op("linear"):
            sess = self._session(party)
            lay = plan(rows, n, out_features, self.byte_cost_s)
            if party.pid == 1:
                s = _client(party, sess, lay, x)
            else:
                assert weight is not None
                s = _server(party, sess, lay, x, self._plaintexts(sess, lay, weight, party.f))
            return _lift(party, s)


def _client_polys(lay: Layout, x: np.ndarray) -> np.ndarray:
    """x mod t in the input packing: (row blocks, input blocks, N) coefficients."""
    nb, nj, _ = lay.blocks
    pad = np.zeros((nb * lay.r, nj * lay.ni), np.uint64)
    pad[: lay.rows, : lay.n] = x & _MASK_T
    blocks = pad.reshape(nb, lay.r, nj, lay.ni).transpose(0, 2, 1, 3).reshape(nb, nj, -1)
    idx = (np.arange(lay.r)[:, None] * (lay.ni * lay.mi) + np.arange(lay.ni)[None, :]).reshape(-1)
    polys = np.zeros((nb, nj, bfv.N), np.uint64)
    polys[:, :, idx] = blocks
    return polys


def _from_replies(lay: Layout, vals: np.ndarray) -> np.ndarray:
    """(row blocks, output blocks, r * mi) values -> [rows, m]."""
    nb, _, no = lay.blocks
    full = vals.reshape(nb, no, lay.r, lay.mi).transpose(0, 2, 1, 3).reshape(nb * lay.r, -1)
    return np.ascontiguousarray(full[: lay.rows, : lay.m])


def _client(party: TwoParty, sess: _Session, lay: Layout, x: np.ndarray) -> np.ndarray:
    assert sess.client is not None
    polys = _client_polys(lay, x)
    blobs = [sess.client.encrypt(p) for p in polys.reshape(-1, bfv.N)]
    header = struct.pack(f"<{len(blobs)}I", *(len(b) for b in blobs))
    party.exchange(header + b"".join(blobs))
    nb, _, no = lay.blocks
    pos = lay.positions()
    size = bfv.reply_size(pos.size)
    got = party.exchange(b"")
    if len(got) != nb * no * size:
        raise PeerError(party.peer, "reply has the wrong length")
    vals = np.stack(
        [
            sess.client.decrypt_reply(got[i * size : (i + 1) * size], pos, party.peer)
            for i in range(nb * no)
        ]
    )
    return _from_replies(lay, vals)


def _split_blobs(party: TwoParty, got: bytes, count: int) -> list[bytes]:
    head = 4 * count
    if len(got) < head:
        raise PeerError(party.peer, "ciphertext batch is too short")
    lengths = struct.unpack(f"<{count}I", got[:head])
    if head + sum(lengths) != len(got):
        raise PeerError(party.peer, "ciphertext batch has the wrong length")
    offs = np.cumsum((head,) + lengths)
    return [got[offs[i] : offs[i + 1]] for i in range(count)]


def stat_bits(lay: Layout) -> float:
    """Statistical security of one reply: c0 is flooded with noise uniform in [-2^b, 2^b)
    (b = `bfv.MAX_FLOOD_BITS`, the most decryption allows) and only its r * mi useful
    coefficients travel (rounding at the switch is per coefficient), so the client's view is
    within r mi B / 2^(b+1) of one computed without W, where B bounds the W-dependent noise
    (for the PUBLIC weight bound: the noise says nothing about the actual weights) plus the
    re-randomising encryption of zero's (whose noise must hide its randomness u). Returns
    -log2 of that distance."""
    _, nj, _ = lay.blocks
    v0 = bfv.NOISE_MAX + 3  # fresh noise, + rounding of the encryption and of adding x0
    eval_bound = nj * (bfv.N * (1 << WEIGHT_BITS) * (v0 + 1) + 2) + 4
    zero_bound = 2 * bfv.NOISE_MAX * bfv.N + bfv.NOISE_MAX + 1
    return bfv.MAX_FLOOD_BITS + 1 - math.log2(lay.r * lay.mi * (eval_bound + zero_bound))


def _weight_plaintexts(ctx: bfv.BfvContext, lay: Layout, w: np.ndarray) -> list:
    """The NTT plaintexts of W's blocks, index j * (output blocks) + o (None: all-zero block,
    which SEAL would refuse to multiply by: a transparent result)."""
    _, nj, no = lay.blocks
    wpad = np.zeros((nj * lay.ni, no * lay.mi), np.int64)
    wpad[: lay.n, : lay.m] = w
    pts: list = []
    for j in range(nj):
        for o in range(no):
            block = wpad[j * lay.ni : (j + 1) * lay.ni, o * lay.mi : (o + 1) * lay.mi]
            coeffs = np.zeros(bfv.N, np.int64)
            coeffs[: lay.ni * lay.mi] = block[::-1].T.reshape(-1)
            pts.append(
                ctx.plaintext_ntt(coeffs.view(np.uint64) & _MASK_T) if coeffs.any() else None
            )
    return pts


def _server(party: TwoParty, sess: _Session, lay: Layout, x: np.ndarray, pts: list) -> np.ndarray:
    assert sess.server is not None
    ctx, ev = sess.ctx, sess.ctx.evaluator
    nb, nj, no = lay.blocks
    own = _client_polys(lay, x)
    got = party.exchange(b"")
    cts = []
    for k, blob in enumerate(_split_blobs(party, got, nb * nj)):
        ct = sess.server.load_input(blob)
        ev.add_plain_inplace(ct, ctx.plaintext(own.reshape(-1, bfv.N)[k]))
        ev.transform_to_ntt_inplace(ct)
        cts.append(ct)
    acc: list = [None] * (nb * no)
    for j in range(nj):
        for o in range(no):
            pt = pts[j * no + o]
            if pt is None:
                continue
            for bi in range(nb):
                prod = ctx.multiply_plain(cts[bi * nj + j], pt)
                k = bi * no + o
                if acc[k] is None:
                    acc[k] = prod
                else:
                    ev.add_inplace(acc[k], prod)
    pos = lay.positions()
    sanitizers = sess.take_sanitizers(party, nb * no)
    replies = []
    for k in range(nb * no):
        if acc[k] is None:  # an all-zero weight block: start from an encryption of zero
            acc[k] = sess.server.zero()
        else:
            ev.transform_from_ntt_inplace(acc[k])
        replies.append(sess.server.seal_reply(acc[k], sanitizers[k][0], pos))
    party.exchange(b"".join(replies))
    masks = np.stack([m for _, m in sanitizers])
    return _from_replies(lay, (np.uint64(0) - masks[:, pos]) & _MASK_T)


def _draw_masks(party: TwoParty, count: int) -> np.ndarray:
    """`count` uniform masks mod t, N coefficients each (every coefficient is masked)."""
    return party.private_random_u64(count * bfv.N).reshape(count, bfv.N) & _MASK_T


def _lift(party: TwoParty, s: np.ndarray) -> np.ndarray:
    """Shares mod t of v (|v| < 2^50) -> shares mod 2^64 of v (1 round, one OT per element)."""
    shape = s.shape
    s = s.reshape(-1)
    n = s.size
    if party.pid == 0:
        s = (s + _OFFSET) & _MASK_T
        top = (s >= _HALF_T).astype(np.uint64)
        w, _ = ot.shared_choice(
            party,
            n,
            0,
            top * np.uint64(bfv.T),
            np.full(n, bfv.T, np.uint64),
            np.zeros(0, np.uint8),
        )
        out = s - w - _OFFSET
    else:
        empty = np.zeros(0, np.uint64)
        _, w = ot.shared_choice(party, n, 0, empty, empty, (s >= _HALF_T).astype(np.uint8))
        out = s - w
    return out.reshape(shape)
