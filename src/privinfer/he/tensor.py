"""EncryptedTensor: numpy/torch tensors under CKKS with linear, conv and polynomial ops.

Security assumption: the holder of an `EncryptedTensor` may be the server (no secret key):
every operation here uses public material only; `encrypt`/`decrypt` need the client context.
Shapes, weights, activations' public ranges and layouts are public; slot values are secret.

Layouts (see `he.packing`): a 1-D tensor of length n is one replicated vector (n <= slots / 2);
a 2-D tensor (T x n) is token-minor packed (T padded to a power of two). `linear` runs the BSGS
diagonal matvec or the packed matrix product; convolutions are linear maps whose few non-zero
generalised diagonals are the only ones encoded ("direct diagonals"). When a `Refresher` is
attached, operations refresh their inputs first if they would run out of levels.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from privinfer.errors import InputError
from privinfer.he import linear, packing, poly
from privinfer.he.ckks import Ciphertext, CkksContext
from privinfer.he.refresh import Refresher


def _as_numpy(data) -> np.ndarray:
    if hasattr(data, "detach"):
        data = data.detach().cpu().numpy()
    return np.asarray(data, dtype=np.float64)


@dataclass
class EncryptedTensor:
    """Ciphertexts plus public shape and layout metadata."""

    ctx: CkksContext
    cts: list[Ciphertext]
    shape: tuple[int, ...]
    cover: int = 0  # 1-D: slots holding valid replicated data
    period: int = 0  # 1-D: replication period (>= length; zero-padded)
    clean: bool = True  # 1-D: zeros beyond cover
    tokens: int = 0  # 2-D: packed token count (power of two)
    refresher: Refresher | None = None

    # ---- client side -------------------------------------------------------------------
    @classmethod
    def encrypt(cls, ctx: CkksContext, data, refresher: Refresher | None = None) -> EncryptedTensor:
        """Encrypt a 1-D or 2-D tensor (numpy or torch)."""
        x = _as_numpy(data)
        slots = ctx.params.slots
        if x.ndim == 1:
            if 2 * x.size > slots:
                raise InputError(f"A 1-D tensor of {x.size} values needs at most {slots // 2}.")
            cover = (slots // x.size) * x.size
            ct = ctx.encrypt(packing.replicated_vector(x, cover, slots))
            return cls(ctx, [ct], x.shape, cover=cover, period=x.size, refresher=refresher)
        if x.ndim == 2:
            tokens = 1 << max(0, (x.shape[0] - 1).bit_length())
            cts = [ctx.encrypt(v) for v in packing.pack_tokens(x, slots, tokens)]
            return cls(ctx, cts, x.shape, tokens=tokens, refresher=refresher)
        raise InputError("EncryptedTensor holds 1-D or 2-D tensors; flatten first.")

    def decrypt(self, ctx: CkksContext) -> np.ndarray:
        """Client only: back to a numpy array of the tensor's shape."""
        if len(self.shape) == 1:
            return ctx.decrypt(self.cts[0])[: self.shape[0]]
        vecs = [ctx.decrypt(ct) for ct in self.cts]
        return packing.unpack_tokens(vecs, self.tokens, self.shape[1], self.shape[0])

    # ---- levels ------------------------------------------------------------------------
    @property
    def level(self) -> int:
        return min(self.ctx.level(ct) for ct in self.cts)

    def _ensure_depth(self, depth: int) -> EncryptedTensor:
        floor = self.ctx.params.floor_level
        if self.refresher is not None and self.refresher.needs_refresh(self.cts[0], depth):
            return replace(self, cts=self.refresher.refresh(self.cts))
        if self.level - depth < floor:
            raise InputError(
                f"Needs {depth} levels, {self.level - floor} left: attach a Refresher."
            )
        return self

    def _steps(self, steps) -> None:
        if self.ctx.has_secret_key:
            self.ctx.add_rotation_steps(steps)

    # ---- elementwise -------------------------------------------------------------------
    def _binary(self, other, op: str) -> EncryptedTensor:
        ctx = self.ctx
        if isinstance(other, EncryptedTensor):
            if other.shape != self.shape or other.tokens != self.tokens:
                raise InputError("Encrypted operands must share shape and layout.")
            if op == "mul":
                a = self._ensure_depth(1)
                b = other._ensure_depth(1)
                cts = [ctx.multiply(x, y) for x, y in zip(a.cts, b.cts, strict=True)]
            else:
                f = ctx.add if op == "add" else ctx.sub
                cts = [f(x, y) for x, y in zip(self.cts, other.cts, strict=True)]
            clean = self.clean and other.clean
            return replace(self, cts=cts, cover=min(self.cover, other.cover), clean=clean)
        vals = self._public_slots(other)
        if op == "mul":
            t = self._ensure_depth(1)
            cts = [ctx.multiply_values(ct, v) for ct, v in zip(t.cts, vals, strict=True)]
        else:
            sign = 1.0 if op == "add" else -1.0
            cts = [ctx.add_plain(ct, sign * v) for ct, v in zip(self.cts, vals, strict=True)]
        return replace(self, cts=cts)

    def _public_slots(self, other) -> list:
        y = np.broadcast_to(_as_numpy(other), self.shape)
        slots = self.ctx.params.slots
        if len(self.shape) == 1:
            y = np.pad(y, (0, self.period - y.size))
            return [packing.replicated_vector(y, self.cover, slots)]
        return packing.pack_tokens(y, slots, self.tokens)

    def __add__(self, other) -> EncryptedTensor:
        return self._binary(other, "add")

    def __sub__(self, other) -> EncryptedTensor:
        return self._binary(other, "sub")

    def __mul__(self, other) -> EncryptedTensor:
        return self._binary(other, "mul")

    def apply(self, approx: poly.Approximation) -> EncryptedTensor:
        """Polynomial activation on every element (inputs must lie in approx's range)."""
        t = self._ensure_depth(poly.chebyshev_depth(approx.degree, approx.lo, approx.hi))
        cts = [poly.evaluate(self.ctx, ct, approx) for ct in t.cts]
        return replace(t, cts=cts, clean=False)

    def gelu(self) -> EncryptedTensor:
        return self.apply(poly.GELU)

    def silu(self) -> EncryptedTensor:
        return self.apply(poly.SILU)

    def sigmoid(self) -> EncryptedTensor:
        return self.apply(poly.SIGMOID)

    # ---- linear ------------------------------------------------------------------------
    def linear(self, weight, bias=None) -> EncryptedTensor:
        """y = x W^T + b (torch convention: W is out x in)."""
        w = _as_numpy(weight)
        if w.shape[1] != self.shape[-1]:
            raise InputError(f"Weight of shape {w.shape} does not match input {self.shape}.")
        ctx = self.ctx
        if len(self.shape) == 1:
            plan = linear.encode_matrix(ctx, w, None, in_period=self.period)
            mask = not self.clean and self.cover < plan.input_cover
            t = self._ensure_depth(2 if mask else 1)
        else:
            t = self._ensure_depth(1)
        if len(self.shape) == 2:
            mat = linear.encode_packed_matrix(ctx, w, t.tokens, t.level)
            self._steps(mat.rotation_steps())
            out = replace(
                t, cts=linear.packed_matmul(ctx, mat, t.cts), shape=(self.shape[0], w.shape[0])
            )
        else:
            ct = t._replicated(plan.input_cover)
            mat = linear.encode_matrix(ctx, w, ctx.level(ct), in_period=t.period)
            self._steps(mat.rotation_steps())
            y = linear.matvec(ctx, mat, ct)
            p = mat.out_period
            out = replace(
                t, cts=[y], shape=(w.shape[0],), cover=p, period=p, clean=mat.output_clean
            )
        return out if bias is None else out + _as_numpy(bias)

    def _replicated(self, need: int) -> Ciphertext:
        n, ct = self.period, self.cts[0]
        if self.cover >= need:
            return ct
        if not self.clean:
            keep = np.zeros(self.ctx.params.slots)
            keep[:n] = 1.0
            ct = self.ctx.multiply_values(ct, keep)
            cover = n
        else:
            cover = self.cover - self.cover % n
            if self.cover % n:
                raise InputError("Cannot replicate a clean vector with a partial copy.")
        self._steps(linear.replicate_steps(n, cover, need, self.ctx.params.slots))
        return linear.replicate(self.ctx, ct, n, cover, need)

    def matmul(self, other) -> EncryptedTensor:
        """x @ B for a public matrix B (in x out)."""
        return self.linear(_as_numpy(other).T)

    def conv1d(self, weight, bias=None, in_channels: int = 1, padding: int = 0) -> EncryptedTensor:
        """1-D convolution (stride 1) on a flattened (C_in x L) vector; weight (C_out, C_in, k)."""
        w = _as_numpy(weight)
        c_out, c_in, k = w.shape
        length = self.shape[0] // in_channels
        l_out = length + 2 * padding - k + 1
        mat = np.zeros((c_out * l_out, c_in * length))
        for o in range(c_out):
            for i in range(c_in):
                for p in range(l_out):
                    for u in range(k):
                        src = p + u - padding
                        if 0 <= src < length:
                            mat[o * l_out + p, i * length + src] = w[o, i, u]
        b = None if bias is None else np.repeat(_as_numpy(bias), l_out)
        return self.linear(mat, b)

    def conv2d(self, weight, bias=None, image: tuple[int, int, int] = (1, 1, 1)) -> EncryptedTensor:
        """2-D convolution (stride 1, no padding) on a flattened (C, H, W) vector."""
        w = _as_numpy(weight)
        c_out, c_in, kh, kw = w.shape
        _, h, wd = image
        ho, wo = h - kh + 1, wd - kw + 1
        mat = np.zeros((c_out * ho * wo, c_in * h * wd))
        for o in range(c_out):
            for y in range(ho):
                for x in range(wo):
                    row = (o * ho + y) * wo + x
                    for i in range(c_in):
                        for dy in range(kh):
                            cols = (i * h + y + dy) * wd + x + np.arange(kw)
                            mat[row, cols] = w[o, i, dy]
        b = None if bias is None else np.repeat(_as_numpy(bias), ho * wo)
        return self.linear(mat, b)
