"""The GPT-2 decoder, written once against `Ops` (pre-LayerNorm, learned positions, GeLU MLP,
causal attention with a KV cache, tied LM head), plus random weights and a float64 reference.

Weights use the `nn.Linear` layout ([out, in]); `convert_gpt2` converts Hugging Face folders.
The MLP uses the exact (erf) GeLU that `Ops.gelu` computes; GPT-2's tanh form differs from it
by < 1e-3.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from privinfer.errors import ModelLoadError
from privinfer.models.ops import Ops


@dataclass(frozen=True)
class GPT2Config:
    """GPT-2 hyper-parameters (defaults: GPT-2 small)."""

    vocab_size: int = 50257
    hidden_size: int = 768
    n_layers: int = 12
    n_heads: int = 12
    max_positions: int = 1024
    ln_eps: float = 1e-5
    eos_ids: tuple[int, ...] = ()

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.n_heads

    @property
    def max_context(self) -> int:
        return self.max_positions


_LINEARS = ("q", "k", "v", "o", "fc", "proj")


class GPT2:
    """Holds engine-native weight handles; `forward` runs one prefill or decode step."""

    def __init__(self, cfg: GPT2Config, weights: Mapping[str, torch.Tensor], ops: Ops) -> None:
        self.cfg, self.ops = cfg, ops

        def prep(name: str, kind: str) -> Any:
            if name not in weights:
                raise ModelLoadError(f"model weights lack tensor {name}")
            return ops.prepare(name, weights[name], kind=kind)  # type: ignore[arg-type]

        self.wte = prep("wte", "embedding")
        self.wpe = prep("wpe", "embedding")
        self.layers: list[dict[str, Any]] = []
        for i in range(cfg.n_layers):
            p = f"h.{i}."
            layer = {
                n: (prep(p + n + ".w", "linear"), prep(p + n + ".b", "bias")) for n in _LINEARS
            }
            for ln in ("ln_1", "ln_2"):
                layer[ln] = (prep(p + ln + ".w", "norm"), prep(p + ln + ".b", "bias"))
            self.layers.append(layer)
        self.ln_f = (prep("ln_f.w", "norm"), prep("ln_f.b", "bias"))
        self.lm_head = ops.prepare("lm_head", weights["wte"], kind="linear")  # tied

    def new_cache(self) -> Any:
        return self.ops.new_cache(self.cfg.n_layers)

    def forward(self, ids: Sequence[int], cache: Any, start: int) -> Any:
        """Run tokens `ids` at positions start.. through the decoder; return last-row logits."""
        c, ops = self.cfg, self.ops
        x = ops.add(
            ops.embed(self.wte, ids), ops.embed_public(self.wpe, range(start, start + len(ids)))
        )
        for i, L in enumerate(self.layers):
            h = ops.layer_norm(x, *L["ln_1"], c.ln_eps)
            q, k, v = ops.linears(h, [L["q"], L["k"], L["v"]])
            k_all, v_all = ops.cache_append(cache, i, k, v)
            a = ops.attention(
                q,
                k_all,
                v_all,
                n_heads=c.n_heads,
                n_kv_heads=c.n_heads,
                head_dim=c.head_dim,
                causal=True,
                q_offset=start,
            )
            x = ops.add(x, ops.linear(a, *L["o"]))
            h = ops.layer_norm(x, *L["ln_2"], c.ln_eps)
            x = ops.add(x, ops.linear(ops.gelu(ops.linear(h, *L["fc"])), *L["proj"]))
        x = ops.layer_norm(ops.last_row(x), *self.ln_f, c.ln_eps)
        return ops.linear(x, self.lm_head)


def random_gpt2_weights(cfg: GPT2Config, seed: int = 0) -> dict[str, torch.Tensor]:
    """GPT-2-style random weights (normal std 0.02, positions 0.01, biases 0.02, LN ~1)."""
    g = torch.Generator().manual_seed(seed)
    d = cfg.hidden_size

    def rnd(*shape: int, std: float = 0.02) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * std

    w = {"wte": rnd(cfg.vocab_size, d), "wpe": rnd(cfg.max_positions, d, std=0.01)}
    shapes = {
        "q": (d, d),
        "k": (d, d),
        "v": (d, d),
        "o": (d, d),
        "fc": (4 * d, d),
        "proj": (d, 4 * d),
    }
    for i in range(cfg.n_layers):
        p = f"h.{i}."
        for n, (o, k) in shapes.items():
            w[p + n + ".w"], w[p + n + ".b"] = rnd(o, k), rnd(o)
        for ln in ("ln_1", "ln_2"):
            w[p + ln + ".w"], w[p + ln + ".b"] = 1.0 + rnd(d, std=0.1), rnd(d)
    w["ln_f.w"], w["ln_f.b"] = 1.0 + rnd(d, std=0.1), rnd(d)
    return w


def gpt2_reference_logits(
    cfg: GPT2Config, weights: Mapping[str, torch.Tensor], ids: Sequence[int]
) -> torch.Tensor:
    """Float64 logits of every position, written directly in torch (no `Ops`, no cache)."""
    w = {k: v.double() for k, v in weights.items()}
    t, d, nh, hd = len(ids), cfg.hidden_size, cfg.n_heads, cfg.head_dim
    x = w["wte"][torch.as_tensor(list(ids))] + w["wpe"][:t]
    mask = torch.ones(t, t, dtype=torch.bool).tril()

    def lin(a: torch.Tensor, name: str) -> torch.Tensor:
        return a @ w[name + ".w"].T + w[name + ".b"]

    def ln(a: torch.Tensor, name: str) -> torch.Tensor:
        return torch.nn.functional.layer_norm(a, (d,), w[name + ".w"], w[name + ".b"], cfg.ln_eps)

    for i in range(cfg.n_layers):
        p = f"h.{i}."
        h = ln(x, p + "ln_1")
        q, k, v = (lin(h, p + n).view(t, nh, hd).transpose(0, 1) for n in ("q", "k", "v"))
        s = (q @ k.transpose(1, 2) / math.sqrt(hd)).masked_fill(~mask, float("-inf"))
        a = (s.softmax(-1) @ v).transpose(0, 1).reshape(t, d)
        x = x + lin(a, p + "o")
        h = ln(x, p + "ln_2")
        x = x + lin(torch.nn.functional.gelu(lin(h, p + "fc")), p + "proj")
    return ln(x, "ln_f") @ w["wte"].T
