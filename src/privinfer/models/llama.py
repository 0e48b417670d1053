"""The LLaMA decoder (SmolLM2 and kin), written once against `Ops`: GQA, RoPE, SwiGLU, KV cache."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from privinfer.errors import ModelLoadError
from privinfer.models.config import LlamaConfig
from privinfer.models.ops import Ops


class Llama:
    """Holds engine-native weight handles; `forward` runs one prefill or decode step."""

    def __init__(self, cfg: LlamaConfig, weights: Mapping[str, torch.Tensor], ops: Ops) -> None:
        self.cfg, self.ops = cfg, ops

        def get(name: str) -> torch.Tensor:
            if name not in weights:
                raise ModelLoadError(f"model weights lack tensor {name}")
            w = weights[name]
            return w if isinstance(w, torch.Tensor) else torch.from_numpy(w)

        self.embed_tokens = ops.prepare(
            "model.embed_tokens.weight", get("model.embed_tokens.weight"), kind="embedding"
        )
        self.layers: list[dict[str, Any]] = []
        for i in range(cfg.n_layers):
            p = f"model.layers.{i}."
            layer = {
                "attn_norm": ops.prepare(
                    p + "input_layernorm.weight", get(p + "input_layernorm.weight"), kind="norm"
                ),
                "mlp_norm": ops.prepare(
                    p + "post_attention_layernorm.weight",
                    get(p + "post_attention_layernorm.weight"),
                    kind="norm",
                ),
            }
            for short, name in (
                ("q", "self_attn.q_proj"),
                ("k", "self_attn.k_proj"),
                ("v", "self_attn.v_proj"),
                ("o", "self_attn.o_proj"),
                ("gate", "mlp.gate_proj"),
                ("up", "mlp.up_proj"),
                ("down", "mlp.down_proj"),
            ):
                layer[short] = ops.prepare(
                    p + name + ".weight", get(p + name + ".weight"), kind="linear"
                )
            self.layers.append(layer)
        self.norm = ops.prepare("model.norm.weight", get("model.norm.weight"), kind="norm")
        head = (
            "model.embed_tokens.weight"
            if cfg.tie_embeddings or "lm_head.weight" not in weights
            else "lm_head.weight"
        )
        self.lm_head = ops.prepare("lm_head.weight", get(head), kind="linear")

    def new_cache(self) -> Any:
        return self.ops.new_cache(self.cfg.n_layers)

    def forward(self, ids: Sequence[int], cache: Any, start: int) -> Any:
        """Run tokens `ids` at positions start.. through the decoder; return last-row logits."""
        c, ops = self.cfg, self.ops
        positions = range(start, start + len(ids))
        x = ops.embed(self.embed_tokens, ids)
        for i, L in enumerate(self.layers):
            q, k, v = self._qkv(L, x, positions)
            x = ops.add(x, ops.linear(self._attend(i, cache, start, q, k, v), L["o"]))
            x = self._mlp(L, x)
        x = ops.rms_norm(ops.last_row(x), self.norm, c.rms_eps)
        return ops.linear(x, self.lm_head)

    def _qkv(self, L: dict[str, Any], x: Any, positions: Sequence[int]) -> tuple[Any, Any, Any]:
        """Pre-norm, the q/k/v maps and RoPE of one layer, for rows at `positions`."""
        c, ops = self.cfg, self.ops
        h = ops.rms_norm(x, L["attn_norm"], c.rms_eps)
        q, k, v = ops.linears(h, [(L["q"], None), (L["k"], None), (L["v"], None)])
        q = ops.rope(q, positions, n_heads=c.n_heads, head_dim=c.head_dim, theta=c.rope_theta)
        k = ops.rope(k, positions, n_heads=c.n_kv_heads, head_dim=c.head_dim, theta=c.rope_theta)
        return q, k, v

    def _attend(self, i: int, cache: Any, start: int, q: Any, k: Any, v: Any) -> Any:
        """Append k, v to layer `i` of one sequence's cache; causal attention of q over it."""
        c, ops = self.cfg, self.ops
        k_all, v_all = ops.cache_append(cache, i, k, v)
        return ops.attention(
            q,
            k_all,
            v_all,
            n_heads=c.n_heads,
            n_kv_heads=c.n_kv_heads,
            head_dim=c.head_dim,
            causal=True,
            q_offset=start,
        )

    def _mlp(self, L: dict[str, Any], x: Any) -> Any:
        """x plus the layer's SwiGLU MLP of its normed rows."""
        ops = self.ops
        h = ops.rms_norm(x, L["mlp_norm"], self.cfg.rms_eps)
        gate, up = ops.linears(h, [(L["gate"], None), (L["up"], None)])
        return ops.add(x, ops.linear(ops.swiglu(gate, up), L["down"]))

    def forward_batch(self, steps: Sequence[tuple[Sequence[int], Any, int]]) -> Any:
        """One step of several sequences at once: (its new token ids, its own cache, the position
        of the first) each, e.g. one token of a decoding session beside a whole prompt of a new
        one. The linear maps run once on all rows stacked; RoPE, the cache append and (causal)
        attention run per sequence over its own cache, so caches of any length mix and no row sees
        another sequence's. Returns [len(steps), vocab]: each sequence's last-row logits. Needs an
        engine with `split_rows` / `cat_rows`."""
        c, ops = self.cfg, self.ops
        sizes = [len(ids) for ids, _, _ in steps]
        positions = [p for ids, _, start in steps for p in range(start, start + len(ids))]
        x = ops.embed(self.embed_tokens, [t for ids, _, _ in steps for t in ids])
        for i, L in enumerate(self.layers):
            q, k, v = self._qkv(L, x, positions)
            parts = [
                self._attend(i, cache, start, qj, kj, vj)
                for (_, cache, start), qj, kj, vj in zip(
                    steps,
                    ops.split_rows(q, sizes),
                    ops.split_rows(k, sizes),
                    ops.split_rows(v, sizes),
                    strict=True,
                )
            ]
            x = ops.add(x, ops.linear(ops.cat_rows(parts), L["o"]))
            x = self._mlp(L, x)
        last = ops.cat_rows([ops.last_row(r) for r in ops.split_rows(x, sizes)])
        return ops.linear(ops.rms_norm(last, self.norm, c.rms_eps), self.lm_head)


def input_rows(
    cfg: LlamaConfig, weights: Mapping[str, torch.Tensor], ids: Sequence[int]
) -> torch.Tensor:
    """Float64 input rows for `ids` computed from public tables alone: the token embeddings."""
    return weights["model.embed_tokens.weight"].to(torch.float64)[list(ids)]
