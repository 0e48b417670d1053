"""Fixed-point encoding and wrapping arithmetic in Z_2^64 (torch int64); no secrets, no assumption.

Ring elements are torch int64 tensors: addition, subtraction and multiplication wrap modulo
2^64 (two's complement), which is exactly arithmetic in Z_2^64. A real value v is encoded with
f fractional bits as round(v * 2^f), saturated to +-(2^62 - 1) so that every encoded value keeps
the headroom the truncation protocol needs (|x| < 2^62).

Speed choice (measured on this project's 2-core machine, one torch thread): torch int64 matmul
37x576x576 1.5 ms, 37x576x8192 14.9 ms, 256x576x576 6.9 ms; the exact float64 alternative with
three 21-bit limbs (6 GEMMs) took 6.4 ms, 397 ms and 29.6 ms; four 16-bit limbs (10 GEMMs) 118 ms
for the first shape. A single float64 GEMM of the same shape costs about as much as the int64
one, so int64 torch matmul is used everywhere (`ring_matmul`).
"""

from __future__ import annotations

import numpy as np
import torch

RING_BITS = 64
MAX_ABS = (1 << 62) - 1  # encoded magnitudes are saturated here (truncation needs |x| < 2^62)
DEFAULT_FRAC_BITS = 16


def encode(x: torch.Tensor | np.ndarray | float, f: int) -> torch.Tensor:
    """Encode reals as int64 fixed point with `f` fractional bits, rounding to nearest and
    saturating to +-(2^62 - 1)."""
    t = torch.as_tensor(x, dtype=torch.float64)
    scaled = torch.round(t * float(2**f))
    scaled = torch.clamp(scaled, -float(MAX_ABS), float(MAX_ABS))
    scaled = torch.nan_to_num(scaled, nan=0.0)
    return scaled.to(torch.int64)


def decode(x: torch.Tensor, f: int) -> torch.Tensor:
    """Decode int64 fixed point (signed two's complement) with `f` fractional bits to float64."""
    return x.to(torch.float64) / float(2**f)


MV_MAX_ROWS = 4


def ring_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Exact matrix product modulo 2^64 (int64 torch matmul and mv wrap).

    A transposed view of a row-major matrix (the tied LM head: the embedding's shares, [V, d])
    goes through `torch.mv` per row of `a`: 10 ms for 1 x 576 @ 576 x 49,152 instead of 262 ms
    for int64 matmul on the strided view (28 ms on a contiguous copy, which would cost 450 MB).
    """
    if (
        a.dim() == 2
        and b.dim() == 2
        and a.shape[0] <= MV_MAX_ROWS
        and b.shape[0] > 1
        and b.stride() == (1, b.shape[0])
    ):
        bt = b.T  # row-major [out, in]
        return torch.stack([torch.mv(bt, row) for row in a])
    if a.dim() == 2 and b.dim() == 2 and a.shape[0] == 1 and b.is_contiguous():
        return ring_vecmat(a[0], b).unsqueeze(0)
    return torch.matmul(a, b)


def ring_vecmat(v: torch.Tensor, b: torch.Tensor, acc: torch.Tensor | None = None) -> torch.Tensor:
    """acc + v @ b for a vector `v` and a row-major matrix `b` ([in, out]), exact mod 2^64.

    `torch.addmv` on the transposed view runs a faster int64 kernel than `torch.matmul` for one
    row (SmolLM2 decode, one torch thread: 576 x 3072 0.8 ms instead of 1.5 ms, 576 x 960 0.21
    instead of 0.35); with several rows matmul is faster."""
    if acc is None:
        acc = torch.zeros(b.shape[1], dtype=torch.int64)
    return torch.addmv(acc, b.T, v)


def msb(x: torch.Tensor) -> torch.Tensor:
    """Most significant bit (0/1, int64) of each ring element."""
    return (x >> 63) & 1


def logical_rshift(x: torch.Tensor, s: int) -> torch.Tensor:
    """Unsigned right shift of ring elements by `s` bits (0 <= s < 64)."""
    if s == 0:
        return x.clone()
    return (x >> s) & ((1 << (64 - s)) - 1)


def bits_to_bytes(x: torch.Tensor) -> bytes:
    """Serialise an int64 tensor (shape is agreed by the protocol, not sent)."""
    return x.numpy().tobytes()  # C order, also for a strided view


def bytes_to_ring(payload: bytes, shape: torch.Size | tuple[int, ...]) -> torch.Tensor:
    """Parse a payload written by `bits_to_bytes` back into an int64 tensor of `shape`."""
    return torch.from_numpy(np.frombuffer(payload, dtype=np.int64).reshape(shape).copy())
