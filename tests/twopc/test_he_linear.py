"""HE linear layers (twopc.he_linear, twopc.bfv): correct shares mod 2^64, the weight never on
the wire, the client's decrypted values masked, the reply's noise flooded, bad peer data
rejected with a PeerError (no crash), bad local input with an InputError."""

from __future__ import annotations

import re
import secrets
from typing import Protocol

import numpy as np
import pytest
from tests.twopc.helpers import CHI2_CRIT_255_DOF_1E3, byte_hist, chi2_two_sample
from tests.views import RecordingLink

from privinfer.errors import InputError
from privinfer.net.memory import MemoryNetwork
from privinfer.net.peer import PeerError
from privinfer.twopc import bfv, he_linear
from privinfer.twopc.he_linear import HeLinear, plan
from privinfer.twopc.ring import encode
from privinfer.twopc.runtime import TwoParty, run_local


class LinearBackend(Protocol):  # the agreed interface (twopc/linear.py), copied until merge
    name: str

    def matmul(
        self, party: TwoParty, x: np.ndarray, weight: np.ndarray | None, out_features: int
    ) -> np.ndarray: ...


def _shares(x: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    x0 = rng.integers(0, 2**64, x.shape, dtype=np.uint64, endpoint=False)
    return x0, x - x0


def _reference(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """x @ encode(w) mod 2^64 with Python integers (x: uint64 ring values)."""
    prod = x.view(np.int64).astype(object) @ encode(w, 16).view(np.int64).astype(object)
    return np.vectorize(lambda v: int(v) % 2**64, otypes=[object])(prod).astype(np.uint64)


def _run(x: np.ndarray, w: np.ndarray, links=None, backend: LinearBackend | None = None):
    lin = backend or HeLinear()
    x0, x1 = _shares(x, np.random.default_rng(7))
    m = w.shape[1]

    def prog(p: TwoParty) -> np.ndarray:
        return lin.matmul(p, x0 if p.pid == 0 else x1, w if p.pid == 0 else None, m)

    return run_local(prog, links=links, timeout_s=30.0)


@pytest.mark.parametrize(
    ("rows", "n", "m", "scale"),
    [(3, 37, 21, 4.0), (9, 70, 130, 3.0), (1, 200, 700, 1.0), (2, 16, 8, 2.0e4)],
)
def test_shares_sum_to_the_exact_product_mod_2_64(rows, n, m, scale):
    rng = np.random.default_rng(rows * 1000 + n)
    x = encode(rng.normal(0, scale, (rows, n)), 16)
    w = rng.normal(0, 0.5, (n, m))
    a, b = _run(x, w)
    assert a.dtype == np.uint64 and a.shape == (rows, m)
    assert np.array_equal(a + b, _reference(x, w))  # exact (|x W| < 2^50 here)


def test_prepared_weights_are_served_from_the_cache():
    rng = np.random.default_rng(11)
    x = encode(rng.normal(0, 1, (2, 30)), 16)
    w = rng.normal(0, 0.5, (30, 20))
    lin = HeLinear()
    x0, x1 = _shares(x, rng)

    def prog(p: TwoParty) -> list[np.ndarray]:
        if p.pid == 0:
            lin.prepare(p, w, 2)
        outs = []
        for weight in (w, w.copy() * 2):  # the cached object, then a new one (not served)
            outs.append(lin.matmul(p, x0 if p.pid == 0 else x1, weight if p.pid == 0 else None, 20))
        return outs

    (a, a2), (b, b2) = run_local(prog)
    assert np.array_equal(a + b, _reference(x, w))
    assert np.array_equal(a2 + b2, _reference(x, w * 2))
    assert len(lin._cache) == 2


def test_layouts_cover_the_model_shapes():
    for rows, n, m in [(8, 768, 2304), (1, 576, 49152), (64, 576, 1536), (1, 1536, 576)]:
        lay = plan(rows, n, m)
        assert lay.r * lay.ni * lay.mi <= bfv.N and lay.blocks[0] * lay.r >= rows
        pos = lay.positions()
        assert len(set(pos.tolist())) == pos.size and pos.max() < bfv.N


CANARY = 0.7071067811  # encodes to 46341 = 0xB505 at f = 16


def _canary_patterns() -> list[bytes]:
    v = int(encode(np.array([CANARY]), 16).view(np.int64)[0])
    pats = []
    for val in (v, -v):
        word = val % 2**64
        pats += [word.to_bytes(8, "little")[:6], word.to_bytes(8, "big")[2:]]
        pats.append((val % bfv.T).to_bytes(7, "little")[:6])  # as a plaintext coefficient
    return pats


def test_the_weight_never_goes_on_the_wire():
    rng = np.random.default_rng(3)
    x = encode(rng.normal(0, 2, (4, 40)), 16)
    w = np.full((40, 50), CANARY)
    w[::3] = -CANARY
    links = list(MemoryNetwork(2, timeout_s=30.0).links)
    links[1] = RecordingLink(links[1])  # party 1 receives everything party 0 sends
    a, b = _run(x, w, links=links)
    assert np.array_equal(a + b, _reference(x, w))
    sent = b"".join(links[1].view)
    assert len(sent) > 60_000  # the replies and the lift
    assert not any(p in sent for p in _canary_patterns())
    # companion: the same search finds the canary when party 0 sends its weight in clear
    leak = sent[:1000] + encode(w, 16).tobytes() + sent[1000:]
    assert any(p in leak for p in _canary_patterns())


def _client_decrypted(monkeypatch, w: np.ndarray, x: np.ndarray, unmasked: bool) -> bytes:
    """The values party 1 decrypts (before the lift), low 6 bytes of each."""
    seen: list[np.ndarray] = []
    lift = he_linear._lift

    def spy(party, s):
        if party.pid == 1:
            seen.append(s.copy())
        return lift(party, s)

    monkeypatch.setattr(he_linear, "_lift", spy)
    if unmasked:  # a server that forgets the mask
        monkeypatch.setattr(he_linear, "_draw_masks", lambda p, k: np.zeros((k, bfv.N), np.uint64))
    _run(x, w)
    monkeypatch.undo()
    s = np.concatenate([v.reshape(-1) for v in seen])
    return np.ascontiguousarray(s).view(np.uint8).reshape(-1, 8)[:, :6].tobytes()


def test_client_sees_masked_values_independent_of_the_weight(monkeypatch):
    rng = np.random.default_rng(5)
    x = encode(rng.normal(0, 1, (8, 64)), 16)
    w_zero, w_big = np.zeros((64, 512)), rng.normal(0, 1, (64, 512))
    h0 = byte_hist(_client_decrypted(monkeypatch, w_zero, x, unmasked=False))
    h1 = byte_hist(_client_decrypted(monkeypatch, w_big, x, unmasked=False))
    assert chi2_two_sample(h0, h1) < CHI2_CRIT_255_DOF_1E3
    # companion: without the mask the same statistic tells W = 0 from W random
    h0u = byte_hist(_client_decrypted(monkeypatch, w_zero, x, unmasked=True))
    assert chi2_two_sample(h0u, h1) > 10 * CHI2_CRIT_255_DOF_1E3


def test_reply_noise_is_flooded_as_stated():
    """The client measures a reply's noise budget with its secret key (at q'', before the
    reply's low bits are dropped): flooded replies keep at most what the stated flood leaves;
    an unflooded one would keep ~flood-bits more."""
    ctx = bfv.BfvContext()
    client = bfv.BfvClient(ctx)
    server = bfv.BfvServer(ctx, client.public_key_bytes(), 1)
    lay = plan(1, 64, 128)
    b = bfv.MAX_FLOOD_BITS
    assert he_linear.stat_bits(lay) >= 56

    def budget(bits: int) -> int:
        ct = server.load_input(client.encrypt(np.arange(bfv.N, dtype=np.uint64)))
        ctx.evaluator.transform_to_ntt_inplace(ct)
        coeffs = np.zeros(bfv.N, np.int64)
        coeffs[:64] = 2**17 - 1
        prod = ctx.multiply_plain(ct, ctx.plaintext_ntt(coeffs.view(np.uint64)))
        ctx.evaluator.transform_from_ntt_inplace(prod)
        noise = np.frombuffer(secrets.token_bytes(16 * bfv.N), np.uint64).reshape(-1, 2)
        ctx.evaluator.add_inplace(prod, server.sanitizer(np.zeros(bfv.N, np.uint64), bits, noise))
        ctx.evaluator.mod_switch_to_next_inplace(prod)  # what seal_reply sends (before rounding)
        ct = prod
        return client._decryptor.invariant_noise_budget(ct)

    q_bits = bfv.Q.bit_length() - bfv.Q_REPLY.bit_length()  # the switch divides by ~2^58
    room = bfv.Q_REPLY.bit_length() - bfv.T_BITS - 1
    assert 60 <= b <= bfv.MAX_FLOOD_BITS
    flooded, plain = budget(b), budget(64)  # 2^64 at q is ~2^6 at q'': below the rounding
    assert 0 < flooded <= room - (b - q_bits) + 1
    assert plain >= flooded + (b - q_bits) - 20  # unflooded noise is ~2^13 after the switch


def _expect_peer_error(monkeypatch, target, name, fake, match, who=0):
    """Party `who` stops with a PeerError matching `match` (both parties stop: no hang)."""
    monkeypatch.setattr(target, name, fake)
    lin, w = HeLinear(), np.ones((8, 4))
    x0, x1 = _shares(encode(np.ones((2, 8)), 16), np.random.default_rng(1))

    def prog(p: TwoParty):
        try:
            return lin.matmul(p, x0 if p.pid == 0 else x1, w if p.pid == 0 else None, 4)
        except PeerError as exc:
            p.link.close()
            return exc

    got = run_local(prog, timeout_s=5.0)
    assert all(isinstance(g, PeerError) for g in got), [repr(g)[:200] for g in got]
    assert re.fullmatch(match, str(got[who])), str(got[who])


def test_truncated_or_corrupt_header_ciphertext_gives_a_peer_error(monkeypatch):
    """(A flipped bit inside the residues can still be a valid ciphertext of something else:
    semi-honest security does not detect that; structure errors are caught.)"""
    good = bfv.BfvClient.encrypt
    cut = lambda self, coeffs: good(self, coeffs)[:-10]  # noqa: E731
    _expect_peer_error(monkeypatch, bfv.BfvClient, "encrypt", cut, "party 1: malformed ciphertext")

    def header(self, coeffs):
        blob = bytearray(good(self, coeffs))
        blob[20] ^= 0xFF  # inside the parms_id
        return bytes(blob)

    _expect_peer_error(
        monkeypatch, bfv.BfvClient, "encrypt", header, "party 1: malformed ciphertext"
    )


def test_garbage_ciphertext_gives_a_peer_error(monkeypatch):
    fake = lambda self, coeffs: secrets.token_bytes(5000)  # noqa: E731
    _expect_peer_error(monkeypatch, bfv.BfvClient, "encrypt", fake, "party 1: malformed ciphertext")


def test_wrong_size_reply_gives_a_peer_error(monkeypatch):
    good = bfv.BfvServer.seal_reply
    short = lambda self, *a: good(self, *a)[:-3]  # noqa: E731
    _expect_peer_error(
        monkeypatch, bfv.BfvServer, "seal_reply", short, "party 0: reply has the wrong length", 1
    )


def test_out_of_range_reply_gives_a_peer_error(monkeypatch):
    good = bfv.BfvServer.seal_reply
    ones = lambda self, *a: b"\xff" * len(good(self, *a))  # noqa: E731
    _expect_peer_error(
        monkeypatch, bfv.BfvServer, "seal_reply", ones, "party 0: reply residue out of range", 1
    )


def test_malformed_public_key_gives_a_peer_error(monkeypatch):
    fake = lambda self: b"\x5e\xa1" + secrets.token_bytes(100)  # noqa: E731
    _expect_peer_error(
        monkeypatch, bfv.BfvClient, "public_key_bytes", fake, "party 1: malformed public key"
    )


class _Fake:
    def __init__(self, pid: int) -> None:
        self.pid, self.f = pid, 16


@pytest.mark.parametrize(
    ("pid", "x", "w", "m"),
    [
        (0, np.zeros((2, 3), np.int64), np.zeros((3, 4)), 4),  # not uint64
        (0, np.zeros((2, 3), np.uint64), np.zeros((4, 3)), 3),  # weight shape
        (1, np.zeros((2, 3), np.uint64), np.zeros((3, 4)), 4),  # client passes a weight
        (0, np.zeros((2, 3), np.uint64), None, 4),  # owner without one
        (0, np.zeros((0, 3), np.uint64), np.zeros((3, 4)), 4),  # empty
    ],
)
def test_bad_local_input_is_an_input_error(pid, x, w, m):
    with pytest.raises(InputError):
        HeLinear().matmul(_Fake(pid), x, w, m)  # type: ignore[arg-type]


def test_too_large_weights_are_refused_not_wrong():
    x = encode(np.ones((1, 8)), 16)
    with pytest.raises(InputError, match="too large"):
        _run(x, np.full((8, 4), 256.0))


def test_flooding_residues_match_python_integers():
    noise = np.frombuffer(secrets.token_bytes(16 * bfv.N), np.uint64).reshape(-1, 2)
    span = 1 << (bfv.MAX_FLOOD_BITS + 1)
    e = (noise[:, 1].astype(object) * 2**64 + noise[:, 0].astype(object)) % span - span // 2
    want = np.stack([(e % p).astype(np.uint64) for p in bfv.DATA_PRIMES])
    assert np.array_equal(bfv._flood_residues(noise, bfv.MAX_FLOOD_BITS), want)


def test_compact_reply_keeps_each_coefficient_within_half_a_dropped_unit():
    from privinfer.twopc import bfv_reply

    p1, p2 = bfv.REPLY_PRIMES
    q = p1 * p2
    rng = np.random.default_rng(2)
    vals = [int.from_bytes(rng.bytes(14), "little") % q for _ in range(2000)] + [0, 1, q - 1]
    r1 = np.array([v % p1 for v in vals], np.uint64)
    r2 = np.array([v % p2 for v in vals], np.uint64)
    data = bfv_reply.compress(r1, r2, p1, p2)
    assert len(data) == bfv_reply.WIDTH * len(vals)
    e1, e2 = bfv_reply.expand(data, p1, p2)
    for v, a, b in zip(vals, e1.tolist(), e2.tolist(), strict=True):
        w = (a + p1 * ((b - a) * pow(p1, -1, p2) % p2) - v) % q
        assert min(w, q - w) <= 1 << (bfv_reply.DROP_BITS - 1)
    assert bfv_reply.expand(b"\xff" * bfv_reply.WIDTH, p1, p2) is None


def test_bfv_parameters_pass_the_128_bit_table_and_one_bit_more_fails():
    from privinfer.errors import SecurityError

    total = sum(p.bit_length() for p in bfv.DATA_PRIMES) + bfv.SPECIAL_BITS
    assert total == bfv.MAX_COEFF_BITS_128[bfv.N] == 218
    bfv.check_security(bfv.N, total)
    with pytest.raises(SecurityError):
        bfv.check_security(bfv.N, total + 1)
    assert all(p % bfv.T == 1 for p in bfv.DATA_PRIMES)  # q = 1 mod t
