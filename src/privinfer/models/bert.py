"""The BERT encoder (all-MiniLM-L6-v2 and kin), written once against `Ops`, with mean pooling."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from privinfer.errors import ModelLoadError
from privinfer.models.config import BertConfig
from privinfer.models.ops import Ops


class Bert:
    """Holds engine-native weight handles; `embed` maps token ids to a pooled sentence vector."""

    def __init__(self, cfg: BertConfig, weights: Mapping[str, torch.Tensor], ops: Ops) -> None:
        self.cfg, self.ops = cfg, ops

        def prep(name: str, kind: str) -> Any:
            for key in (name, "bert." + name):
                if key in weights:
                    return ops.prepare(name, weights[key], kind=kind)  # type: ignore[arg-type]
            raise ModelLoadError(f"model weights lack tensor {name}")

        e = "embeddings."
        self.word = prep(e + "word_embeddings.weight", "embedding")
        self.pos = prep(e + "position_embeddings.weight", "embedding")
        self.type = prep(e + "token_type_embeddings.weight", "embedding")
        self.emb_ln = (prep(e + "LayerNorm.weight", "norm"), prep(e + "LayerNorm.bias", "bias"))
        self.layers: list[dict[str, Any]] = []
        for i in range(cfg.n_layers):
            p = f"encoder.layer.{i}."
            lin = {
                "q": p + "attention.self.query",
                "k": p + "attention.self.key",
                "v": p + "attention.self.value",
                "o": p + "attention.output.dense",
                "up": p + "intermediate.dense",
                "down": p + "output.dense",
            }
            layer = {
                k: (prep(n + ".weight", "linear"), prep(n + ".bias", "bias"))
                for k, n in lin.items()
            }
            layer["ln1"] = (
                prep(p + "attention.output.LayerNorm.weight", "norm"),
                prep(p + "attention.output.LayerNorm.bias", "bias"),
            )
            layer["ln2"] = (
                prep(p + "output.LayerNorm.weight", "norm"),
                prep(p + "output.LayerNorm.bias", "bias"),
            )
            self.layers.append(layer)

    def encode(self, ids: Sequence[int]) -> Any:
        """Token ids (with [CLS] ... [SEP]) -> pooled (and normalised) embedding, engine-native."""
        c, ops = self.cfg, self.ops
        t = len(ids)
        x = ops.add(ops.embed(self.word, ids), ops.embed_public(self.pos, range(t)))
        x = ops.add(x, ops.embed_public(self.type, [0] * t))
        x = ops.layer_norm(x, *self.emb_ln, c.ln_eps)
        hd = c.hidden_size // c.n_heads
        for L in self.layers:
            q, k, v = ops.linears(x, [L["q"], L["k"], L["v"]])
            a = ops.attention(
                q,
                k,
                v,
                n_heads=c.n_heads,
                n_kv_heads=c.n_heads,
                head_dim=hd,
                causal=False,
                q_offset=0,
            )
            x = ops.layer_norm(ops.add(x, ops.linear(a, *L["o"])), *L["ln1"], c.ln_eps)
            h = ops.gelu(ops.linear(x, *L["up"]))
            x = ops.layer_norm(ops.add(x, ops.linear(h, *L["down"])), *L["ln2"], c.ln_eps)
        return ops.mean_pool(x, normalize=c.normalize)


def input_rows(
    cfg: BertConfig, weights: Mapping[str, torch.Tensor], ids: Sequence[int]
) -> torch.Tensor:
    """Float64 input rows for `ids` computed from public tables alone: word + position + type
    embeddings and the embedding LayerNorm."""

    def get(name: str) -> torch.Tensor:
        return (weights[name] if name in weights else weights["bert." + name]).to(torch.float64)

    e = "embeddings."
    x = get(e + "word_embeddings.weight")[list(ids)]
    x = x + get(e + "position_embeddings.weight")[: len(ids)]
    x = x + get(e + "token_type_embeddings.weight")[0]
    return torch.nn.functional.layer_norm(
        x, (x.shape[-1],), get(e + "LayerNorm.weight"), get(e + "LayerNorm.bias"), cfg.ln_eps
    )
