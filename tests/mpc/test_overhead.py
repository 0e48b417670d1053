"""The CPU-overhead paths compute the same ring values as the straightforward ones: buffered PRF
draws read one continuous AES-CTR stream, the one-row matrix-vector product equals int64 matmul
(wrapping), and the numpy truncation and a2b give the same shares as their torch forms."""

from __future__ import annotations

import torch
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from tests.mpc.helpers import KEYS

from privinfer.mpc.prf import BufferedKeyStream
from privinfer.mpc.protocols import boolean, trunc
from privinfer.mpc.ring import ring_matmul
from privinfer.mpc.runtime import run_local
from privinfer.mpc.shares import RShare, reveal_bits, reveal_ring, share_from


def test_buffered_draws_are_one_continuous_stream():
    key = b"q" * 16
    sizes = [(3,), (2, 5), (), (70_000,), (4, 1, 2), (40_000,)]
    s = BufferedKeyStream(key, chunk_bytes=1 << 12)
    got = torch.cat([s.draw(shape).reshape(-1) for shape in sizes])
    nonce = ((1 << 64) - 16).to_bytes(8, "big") + bytes(8)
    enc = Cipher(algorithms.AES(key), modes.CTR(nonce)).encryptor()
    ref = torch.frombuffer(bytearray(enc.update(bytes(8 * got.numel()))), dtype=torch.int64)
    assert torch.equal(got, ref)
    assert [tuple(s.draw(shape).shape) for shape in sizes] == sizes


def test_one_row_products_equal_int64_matmul(gen):
    lim = 1 << 62
    for k, n in ((5, 7), (576, 960), (64, 3)):
        x = torch.randint(-lim, lim, (1, k), generator=gen, dtype=torch.int64) * 3
        w = torch.randint(-lim, lim, (k, n), generator=gen, dtype=torch.int64) * 5
        assert torch.equal(ring_matmul(x, w), torch.matmul(x, w))  # wraps mod 2^64 alike


def _torch_trunc_ref(x_ring: torch.Tensor, shift: int) -> torch.Tensor:
    """Plain reference: the protocol's output is round(x / 2^shift) within one ulp."""
    return torch.div(x_ring, 1 << shift, rounding_mode="floor")


def test_numpy_trunc_and_a2b_values(gen):
    x = (torch.randn(4, 9, generator=gen, dtype=torch.float64) * 2.0**40).to(torch.int64)
    x[0, 0], x[0, 1] = 0, -1

    def program(p):
        s = share_from(p, 0, x if p.pid == 0 else None, tuple(x.shape), f=0, encoded=True)
        t = reveal_ring(p, trunc.trunc(p, s.with_f(20), 20))
        mixed = trunc.trunc_mixed(p, [s.with_f(20), s.map(lambda a: a[0]).with_f(30)], [7, 13])
        m = [reveal_ring(p, r) for r in mixed]
        bits = reveal_bits(p, boolean.a2b(p, s))
        return t, m, bits

    t, m, bits = run_local(program, keys=KEYS)[0]
    assert (t - _torch_trunc_ref(x, 20)).abs().max() <= 1
    assert (m[0] - _torch_trunc_ref(x, 7)).abs().max() <= 1
    assert (m[1] - _torch_trunc_ref(x[0], 13)).abs().max() <= 1
    assert torch.equal(bits, x)  # XOR shares of the two's-complement words


def test_trunc_keeps_fractional_bits():
    def program(p):
        s = share_from(p, 0, torch.ones(3) if p.pid == 0 else None, (3,))
        return trunc.trunc(p, RShare(s.a, s.b, p.pid, 24), 8).f

    assert run_local(program, keys=KEYS) == [16, 16, 16]


def test_draw_words_are_the_same_words():
    a, b = BufferedKeyStream(b"w" * 16, chunk_bytes=1 << 10), BufferedKeyStream(b"w" * 16, 1 << 10)
    for n in (5, 100, 1000, 3):  # within and across buffer refills
        words = a.draw_words(n)
        assert words.dtype.name == "uint64"
        assert torch.equal(torch.from_numpy(words.view("int64").copy()), b.draw((n,)))
