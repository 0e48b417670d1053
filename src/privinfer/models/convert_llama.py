"""LLaMA family converters: Hugging Face config.json and GGUF (`llama.*` metadata, llama.cpp
tensor names) to `LlamaConfig` and weights in Hugging Face naming and layout.

GGUF q/k rows are un-permuted from llama.cpp's interleaved-pair RoPE order into the
rotate-half layout, so one `Ops.rope` serves GGUF files and HF folders alike.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from privinfer.errors import ModelLoadError
from privinfer.models.config import LlamaConfig
from privinfer.models.io.gguf import GgufFile, ProgressFn
from privinfer.models.io.hf import read_json
from privinfer.models.io.tokenizer import Tokenizer, from_tokenizer_json

_LAYER_MAP = {
    "attn_q": "self_attn.q_proj.weight",
    "attn_k": "self_attn.k_proj.weight",
    "attn_v": "self_attn.v_proj.weight",
    "attn_output": "self_attn.o_proj.weight",
    "ffn_gate": "mlp.gate_proj.weight",
    "ffn_up": "mlp.up_proj.weight",
    "ffn_down": "mlp.down_proj.weight",
    "attn_norm": "input_layernorm.weight",
    "ffn_norm": "post_attention_layernorm.weight",
}
_TOP_MAP = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}


def _eos_ids(folder: Path, cfg: dict[str, Any]) -> tuple[int, ...]:
    eos = read_json(folder / "generation_config.json").get("eos_token_id", cfg.get("eos_token_id"))
    return tuple(eos) if isinstance(eos, list) else ((eos,) if eos is not None else ())


def hf_config(cfg: dict[str, Any], folder: Path) -> LlamaConfig:
    """`LlamaConfig` from a llama config.json (eos ids from generation_config.json first)."""
    if cfg.get("rope_scaling"):
        raise ModelLoadError("rope_scaling is not supported yet")
    n_heads = int(cfg["num_attention_heads"])
    return LlamaConfig(
        vocab_size=int(cfg["vocab_size"]),
        hidden_size=int(cfg["hidden_size"]),
        intermediate_size=int(cfg["intermediate_size"]),
        n_layers=int(cfg["num_hidden_layers"]),
        n_heads=n_heads,
        n_kv_heads=int(cfg.get("num_key_value_heads", n_heads)),
        head_dim=int(cfg.get("head_dim") or cfg["hidden_size"] // n_heads),
        rope_theta=float(cfg.get("rope_theta", 10000.0)),
        rms_eps=float(cfg.get("rms_norm_eps", 1e-5)),
        max_context=int(cfg.get("max_position_embeddings", 2048)),
        tie_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        bos_id=cfg.get("bos_token_id"),
        eos_ids=_eos_ids(folder, cfg),
    )


def hf_tokenizer(folder: Path, cfg: LlamaConfig) -> Tokenizer:
    chat = read_json(folder / "tokenizer_config.json").get("chat_template")
    return from_tokenizer_json(folder, eos_ids=cfg.eos_ids, bos_id=cfg.bos_id, chat_template=chat)


def _unpermute(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo llama.cpp's q/k row permutation (interleaved pairs -> rotate-half layout)."""
    out_dim, in_dim = w.shape
    hd = out_dim // n_heads
    return w.reshape(n_heads, hd // 2, 2, in_dim).swapaxes(1, 2).reshape(out_dim, in_dim)


def _hf_name(name: str) -> str | None:
    if name in _TOP_MAP:
        return _TOP_MAP[name]
    if name.startswith("blk."):
        _, idx, rest = name.split(".", 2)
        key = rest.rsplit(".", 1)[0]
        if key in _LAYER_MAP:
            return f"model.layers.{idx}.{_LAYER_MAP[key]}"
    return None  # rope_freqs and anything else this definition does not use


def gguf_config(g: GgufFile) -> LlamaConfig:
    a = "llama."
    try:
        hidden = int(g.field(a + "embedding_length"))
        n_heads = int(g.field(a + "attention.head_count"))
        eos = g.field("tokenizer.ggml.eos_token_id")
        return LlamaConfig(
            vocab_size=len(g.field("tokenizer.ggml.tokens")),
            hidden_size=hidden,
            intermediate_size=int(g.field(a + "feed_forward_length")),
            n_layers=int(g.field(a + "block_count")),
            n_heads=n_heads,
            n_kv_heads=int(g.field(a + "attention.head_count_kv", n_heads)),
            head_dim=int(g.field(a + "rope.dimension_count", hidden // n_heads)),
            rope_theta=float(g.field(a + "rope.freq_base", 10000.0)),
            rms_eps=float(g.field(a + "attention.layer_norm_rms_epsilon", 1e-5)),
            max_context=int(g.field(a + "context_length", 2048)),
            tie_embeddings=not g.has_tensor("output.weight"),
            bos_id=g.field("tokenizer.ggml.bos_token_id"),
            eos_ids=(int(eos),) if eos is not None else (),
        )
    except (TypeError, ValueError) as exc:
        raise ModelLoadError(f"{g.path.name} lacks required llama metadata ({exc})") from None


def from_gguf(
    g: GgufFile, on_progress: ProgressFn | None = None
) -> tuple[LlamaConfig, dict[str, torch.Tensor]]:
    """Config and float32 weights (HF names, rotate-half q/k) of a llama GGUF."""
    cfg = gguf_config(g)
    weights: dict[str, torch.Tensor] = {}
    for gname, arr, _ in g.tensors(on_progress):
        name = _hf_name(gname)
        if name is None:
            continue
        if name.endswith("q_proj.weight"):
            arr = _unpermute(arr, cfg.n_heads)
        elif name.endswith("k_proj.weight"):
            arr = _unpermute(arr, cfg.n_kv_heads)
        weights[name] = torch.from_numpy(arr if arr.flags.writeable else arr.copy())
    if "model.embed_tokens.weight" not in weights:
        raise ModelLoadError(f"{g.path.name} has no token embedding tensor")
    return cfg, weights
