"""Random-OT pools for both directions and the online OTs built on them: chosen-message
1-out-of-2 OT of ring words, correlated OT for bit-times-value products, and 1-out-of-N OT of
short messages (semi-honest; computational security of IKNP and the base OT, 128-bit; no
statistical error).

Random OTs come from IKNP (`iknp.py`) in two directions: direction d has party d as sender.
Protocols first `reserve` the random OTs they will use (both parties pass the same counts, so
both know when an extension round is due; that round is offline work), then `take` them in
the same order at both parties. Derandomisation (Beaver 1995): the receiver sends its choice
xor the random choice (1 bit per OT), the sender answers with its messages masked by the random
OT keys; 2 rounds, both directions travel in the same 2 rounds. `shared_choice` needs one
round when the sender's output is a fresh random share (see its docstring).
1-out-of-N (N = 2^m) uses m random OTs per instance (Naor-Pinkas style): the pad of entry x is
the xor over k of H(key_k^{x_k}, tweak(instance, k, x)); an entry other than the chosen one
needs at least one key the receiver lacks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from privinfer.net.peer import PeerError
from privinfer.twopc.aes import TweakCounter, fixed_key_permute, tccr_hash_permuted
from privinfer.twopc.baseot import BaseOTReceiver, BaseOTSender, random_choice_bits
from privinfer.twopc.iknp import KAPPA, IknpReceiver, IknpSender

if TYPE_CHECKING:
    from privinfer.twopc.runtime import TwoParty

MIN_BATCH = 1 << 12
EXTEND_CHUNK = 1 << 18  # OTs per IKNP batch inside one extension message (bounds temporaries)
CHOOSE_N_CHUNK = 1 << 14  # 1-out-of-N instances hashed at a time (bounds the sender's memory)


def _u64(blocks: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(blocks).view(np.uint64)[..., 0]


class OTPools:
    """One party's random OTs: as sender in its own direction, as receiver in the peer's."""

    def __init__(self, party: TwoParty) -> None:
        self.party = party
        self.iknp_sender: IknpSender | None = None
        self.iknp_receiver: IknpReceiver | None = None
        self.avail = [0, 0]  # random OTs in stock per direction (same at both parties)
        self._send_m0 = np.zeros((0, 16), np.uint8)
        self._send_m1 = np.zeros((0, 16), np.uint8)
        self._recv_c = np.zeros(0, np.uint8)
        self._recv_m = np.zeros((0, 16), np.uint8)
        self.rot_tweaks = [TweakCounter(1 << 56), TweakCounter(2 << 56)]
        self.pad_tweaks = TweakCounter(3 << 56)
        self.extended = [0, 0]

    def setup(self) -> None:
        """Base OTs for both directions at once (2 rounds)."""
        p = self.party
        base_sender = BaseOTSender()  # for the direction in which this party is IKNP receiver
        first = p.exchange(base_sender.first_message())
        delta = random_choice_bits(KAPPA)
        base_receiver = BaseOTReceiver(delta)
        try:
            reply = p.exchange(base_receiver.reply(first))
            k0, k1 = base_sender.keys(reply, KAPPA)
        except ValueError as exc:
            raise PeerError(p.peer, f"base OT failed ({exc})") from None
        self.iknp_sender = IknpSender(delta, base_receiver.keys())
        self.iknp_receiver = IknpReceiver(k0, k1)

    def reserve(self, sender0: int, sender1: int) -> None:
        """Make sure `sender0` random OTs with party 0 as sender and `sender1` with party 1 are
        in stock; extends by IKNP (one offline round) when either is short."""
        need = [max(0, sender0 - self.avail[0]), max(0, sender1 - self.avail[1])]
        if not any(need):
            return
        if self.iknp_sender is None or self.iknp_receiver is None:
            raise RuntimeError("call setup() first")
        p = self.party
        sizes = [0 if k == 0 else -(-max(k, MIN_BATCH) // KAPPA) * KAPPA for k in need]
        with p.offline_phase():
            r_bits = random_choice_bits(sizes[p.peer]) if sizes[p.peer] else None
            mine = b""
            if r_bits is not None:  # the peer is sender there: this party is IKNP receiver
                parts, rows = [], []
                for lo, hi in _chunks(sizes[p.peer]):
                    u, t = self.iknp_receiver.extend(
                        hi - lo, r_bits[lo:hi], self.rot_tweaks[p.peer].take(hi - lo)
                    )
                    parts.append(u)
                    rows.append(t)
                mine = b"".join(parts)
            got = p.exchange(mine)
            if len(got) != sizes[p.pid] * KAPPA // 8:
                raise PeerError(p.peer, "OT extension message has the wrong length")
            if r_bits is not None:
                self._recv_c = np.concatenate([self._recv_c, r_bits])
                self._recv_m = np.concatenate([self._recv_m, *rows])
            if sizes[p.pid]:
                m0s, m1s = [], []
                for lo, hi in _chunks(sizes[p.pid]):
                    m0, m1 = self.iknp_sender.extend(
                        hi - lo,
                        got[lo * KAPPA // 8 : hi * KAPPA // 8],
                        self.rot_tweaks[p.pid].take(hi - lo),
                    )
                    m0s.append(m0)
                    m1s.append(m1)
                self._send_m0 = np.concatenate([self._send_m0, *m0s])
                self._send_m1 = np.concatenate([self._send_m1, *m1s])
        for d in (0, 1):
            self.avail[d] += sizes[d]
            self.extended[d] += sizes[d]

    def take_send(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """n random OTs with this party as sender: (m0, m1), each (n, 16) uint8."""
        if n > self.avail[self.party.pid]:
            raise RuntimeError("random OTs not reserved")
        m0, m1 = self._send_m0[:n], self._send_m1[:n]
        self._send_m0, self._send_m1 = self._send_m0[n:], self._send_m1[n:]
        self.avail[self.party.pid] -= n
        return m0, m1

    def take_recv(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """n random OTs with this party as receiver: (choice bits (n,), m_c (n, 16))."""
        if n > self.avail[self.party.peer]:
            raise RuntimeError("random OTs not reserved")
        c, m = self._recv_c[:n], self._recv_m[:n]
        self._recv_c, self._recv_m = self._recv_c[n:], self._recv_m[n:]
        self.avail[self.party.peer] -= n
        return c, m


def _chunks(n: int) -> list[tuple[int, int]]:
    """[lo, hi) pieces of at most EXTEND_CHUNK OTs (each its own IKNP batch, one message)."""
    return [(lo, min(n, lo + EXTEND_CHUNK)) for lo in range(0, n, EXTEND_CHUNK)]


def _bits_payload(bits: np.ndarray) -> bytes:
    return np.packbits(bits.astype(np.uint8), bitorder="little").tobytes()


def _recv_bits(party: TwoParty, mine: bytes, n: int) -> np.ndarray:
    got = party.exchange(mine)
    if len(got) != (n + 7) // 8:
        raise PeerError(party.peer, "payload has the wrong length")
    return np.unpackbits(np.frombuffer(got, np.uint8), bitorder="little")[:n]


def _sizes(party: TwoParty, n0: int, n1: int) -> tuple[int, int]:
    """(OTs this party sends in, OTs it receives in)."""
    return (n0, n1) if party.pid == 0 else (n1, n0)


def choose(
    party: TwoParty, n0: int, n1: int, messages: np.ndarray, choices: np.ndarray
) -> np.ndarray:
    """Chosen-message 1-out-of-2 OT of uint64 words in both directions at once: party 0 sends
    in n0 OTs, party 1 in n1. `messages` (n_mine, 2) are this party's pairs as sender,
    `choices` (n_theirs,) its bits as receiver; returns the words it chose. 2 rounds,
    online bytes per OT: 1 bit up, 16 bytes down."""
    n_send, n_recv = _sizes(party, n0, n1)
    party.ot.reserve(n0, n1)
    m0, m1 = party.ot.take_send(n_send)
    c, mc = party.ot.take_recv(n_recv)
    d_peer = _recv_bits(party, _bits_payload(np.asarray(choices, np.uint8) ^ c), n_send)
    k0, k1 = _u64(m0), _u64(m1)
    msgs = np.asarray(messages, dtype=np.uint64).reshape(n_send, 2)
    flip = d_peer.astype(bool)
    y0 = msgs[:, 0] ^ np.where(flip, k1, k0)
    y1 = msgs[:, 1] ^ np.where(flip, k0, k1)
    got = party.exchange_array(np.stack([y0, y1], axis=1), np.uint64, 2 * n_recv)
    got = got.reshape(n_recv, 2)
    return got[np.arange(n_recv), np.asarray(choices, np.int64)] ^ _u64(mc)


def cot_mul(
    party: TwoParty, n0: int, n1: int, values: np.ndarray, bits: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Additive shares of b * v (mod 2^64) where the sender holds words v and the receiver
    bits b, in both directions at once (party 0 sends in n0, party 1 in n1). Returns (shares of
    the products where this party sent, shares where it received). 2 rounds; online bytes
    per product: 1 bit up, 8 bytes down."""
    n_send, n_recv = _sizes(party, n0, n1)
    party.ot.reserve(n0, n1)
    m0, m1 = party.ot.take_send(n_send)
    c, mc = party.ot.take_recv(n_recv)
    b = np.asarray(bits, np.uint8)
    d_peer = _recv_bits(party, _bits_payload(b ^ c), n_send).astype(bool)
    k0, k1 = _u64(m0), _u64(m1)
    s = np.where(d_peer, k1, k0)
    w = np.where(d_peer, k0, k1) - s - np.asarray(values, dtype=np.uint64)
    got = party.exchange_array(w, np.uint64, n_recv)
    out_recv = _u64(mc) - b.astype(np.uint64) * got
    return np.zeros_like(s) - s, out_recv


def choose_n(
    party: TwoParty,
    sender: int,
    n: int,
    log_n: int,
    width: int,
    table: np.ndarray | None,
    index: np.ndarray | None,
) -> np.ndarray | None:
    """1-out-of-2^log_n OT of `width`-bit messages (width <= 8), n instances, `sender` sends.
    The sender passes `table` (n, 2^log_n) uint8; the receiver `index` (n,). Returns the chosen
    entries at the receiver, None at the sender. 2 rounds; online bytes per instance:
    1 byte up, 2^log_n * width / 8 down."""
    big_n = 1 << log_n
    counts = (n * log_n, 0) if sender == 0 else (0, n * log_n)
    party.ot.reserve(*counts)
    base = np.uint64(party.ot.pad_tweaks.take_start(n * log_n * big_n))
    pos = np.arange(log_n, dtype=np.uint8)
    mask = (1 << width) - 1

    def tweaks(start: int, stop: int, x: np.ndarray | int) -> np.ndarray:
        """Tweak of (instance i, position k, entry x) = base + (i log_n + k) 2^log_n + x."""
        inst = np.arange(start, stop, dtype=np.uint64)[:, None] * np.uint64(log_n)
        slot = (inst + pos.astype(np.uint64)) * np.uint64(big_n)
        return slot + np.asarray(x, np.uint64).reshape(-1, 1) + base

    if party.pid == sender:
        m0, m1 = party.ot.take_send(n * log_n)
        d_got = party.exchange(b"")
        if len(d_got) != n:
            raise PeerError(party.peer, "payload has the wrong length")
        d = (np.frombuffer(d_got, np.uint8)[:, None] >> pos) & 1  # (n, log_n)
        assert table is not None
        out = np.empty((n, big_n), dtype=np.uint8)
        for lo in range(0, n, CHOOSE_N_CHUNK):
            hi = min(n, lo + CHOOSE_N_CHUNK)
            p0 = fixed_key_permute(m0[lo * log_n : hi * log_n]).reshape(hi - lo, log_n, 16)
            p1 = fixed_key_permute(m1[lo * log_n : hi * log_n]).reshape(hi - lo, log_n, 16)
            for x in range(big_n):
                use1 = (((x >> pos) & 1) ^ d[lo:hi]).astype(bool)[..., None]
                sel = np.where(use1, p1, p0).reshape(-1, 16)
                pad = tccr_hash_permuted(sel, tweaks(lo, hi, x).reshape(-1))
                pad = np.bitwise_xor.reduce(pad.reshape(hi - lo, log_n, 16)[:, :, 0], axis=1)
                out[lo:hi, x] = (table[lo:hi, x] ^ pad) & mask
        bits = np.unpackbits(out[..., None], axis=2, bitorder="little")[..., :width]
        party.exchange(np.packbits(bits.reshape(-1), bitorder="little"))
        return None
    c, mc = party.ot.take_recv(n * log_n)
    assert index is not None
    idx = np.asarray(index, dtype=np.int64)
    idx_bits = ((idx[:, None] >> pos) & 1).astype(np.uint8)
    d = idx_bits ^ c.reshape(n, log_n)
    party.exchange(np.packbits(d, axis=1, bitorder="little")[:, 0])
    got = party.exchange(b"")
    n_bits = n * big_n * width
    if len(got) != (n_bits + 7) // 8:
        raise PeerError(party.peer, "payload has the wrong length")
    bits = np.unpackbits(np.frombuffer(got, np.uint8), bitorder="little")[:n_bits]
    y = np.packbits(bits.reshape(n, big_n, width), axis=2, bitorder="little")[..., 0]
    pad = tccr_hash_permuted(fixed_key_permute(mc), tweaks(0, n, idx).reshape(-1))
    pad = np.bitwise_xor.reduce(pad.reshape(n, log_n, 16)[:, :, 0], axis=1)
    return (y[np.arange(n), idx] ^ pad) & mask


def shared_choice(
    party: TwoParty, n0: int, n1: int, g0: np.ndarray, g1: np.ndarray, bits: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Additive shares of g(b) where the sender holds the words g(0), g(1) and the receiver the
    bit b, in both directions at once, in ONE round (instead of derandomisation's two).

    The receiver sends e = b xor c (c its random-OT choice) while the sender sends, under the
    key of each index j, the pair (g(j) - r_0, g(1 - j) - r_1) with fresh uniform r_0, r_1; the
    receiver keeps component e of entry c, i.e. g(b) - r_e, and the sender, once it has e,
    keeps r_e. The receiver's other component is masked by the independent r_(1-e), the other
    entry by the key it lacks; e is uniform to the sender. 1 bit up, 32 bytes down per OT.
    Returns (shares where this party sent, shares where it received)."""
    n_send, n_recv = _sizes(party, n0, n1)
    party.ot.reserve(n0, n1)
    m0, m1 = party.ot.take_send(n_send)
    c, mc = party.ot.take_recv(n_recv)
    b = np.asarray(bits, np.uint8)
    r = party.private_random_u64(2 * n_send).reshape(n_send, 2)
    g0 = np.asarray(g0, np.uint64)
    g1 = np.asarray(g1, np.uint64)
    y0 = np.stack([g0 - r[:, 0], g1 - r[:, 1]], axis=1) ^ np.ascontiguousarray(m0).view(np.uint64)
    y1 = np.stack([g1 - r[:, 0], g0 - r[:, 1]], axis=1) ^ np.ascontiguousarray(m1).view(np.uint64)
    payload = _bits_payload(b ^ c) + np.stack([y0, y1], axis=1).tobytes()
    got = party.exchange(payload)
    n_e = (n_send + 7) // 8
    if len(got) != n_e + 32 * n_recv:
        raise PeerError(party.peer, "payload has the wrong length")
    e_peer = np.unpackbits(np.frombuffer(got[:n_e], np.uint8), bitorder="little")[:n_send]
    ys = np.frombuffer(got[n_e:], np.uint64).reshape(n_recv, 2, 2)
    entry = ys[np.arange(n_recv), c.astype(np.int64)] ^ np.ascontiguousarray(mc).view(np.uint64)
    e_mine = (b ^ c).astype(np.int64)
    return r[np.arange(n_send), e_peer.astype(np.int64)], entry[np.arange(n_recv), e_mine]
