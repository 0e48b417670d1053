"""Read a LLaMA-family GGUF file: hyper-parameters, dequantized float32 weights, tokenizer data.

Weights come back in Hugging Face naming and layout (q/k un-permuted from llama.cpp's
interleaved-pair RoPE order), so one model definition serves GGUF and HF folders alike.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from privinfer.errors import ModelLoadError
from privinfer.models.config import LlamaConfig

SUPPORTED_QTYPES = {
    "F32",
    "F16",
    "BF16",
    "Q8_0",
    "Q4_0",
    "Q4_1",
    "Q5_0",
    "Q5_1",
    "Q4_K",
    "Q5_K",
    "Q6_K",
}

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


@dataclass
class GgufModel:
    config: LlamaConfig
    weights: dict[str, np.ndarray]
    tokenizer_meta: dict[str, Any]
    chat_template: str | None
    quant_types: dict[str, str]


def _reader(path: Path):  # noqa: ANN202
    import gguf

    if not path.is_file():
        raise ModelLoadError(f"model file not found: {path}")
    try:
        with open(path, "rb") as fh:
            if fh.read(4) != b"GGUF":
                raise ModelLoadError(f"{path.name} is not a GGUF file (bad magic)")
        reader = gguf.GGUFReader(path)
    except ModelLoadError:
        raise
    except Exception as exc:  # the gguf package raises many kinds on corrupt input
        raise ModelLoadError(
            f"{path.name} is truncated or corrupt ({type(exc).__name__})"
        ) from None
    size = os.path.getsize(path)
    for t in reader.tensors:
        if t.data_offset + t.n_bytes > size:
            raise ModelLoadError(f"{path.name} is truncated: tensor {t.name} runs past the end")
    return reader


def _field(reader: Any, key: str, default: Any = None) -> Any:
    f = reader.fields.get(key)
    if f is None:
        return default
    return f.contents()


def _unpermute(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo llama.cpp's q/k row permutation (interleaved pairs -> rotate-half layout)."""
    out_dim, in_dim = w.shape
    hd = out_dim // n_heads
    return w.reshape(n_heads, hd // 2, 2, in_dim).swapaxes(1, 2).reshape(out_dim, in_dim)


def read_gguf(path: str | Path, *, on_progress: Any = None) -> GgufModel:
    """Load `path` fully; raise ModelLoadError with one clear sentence on any problem."""
    import gguf

    path = Path(path)
    reader = _reader(path)
    arch = _field(reader, "general.architecture")
    if arch != "llama":
        raise ModelLoadError(f"unsupported architecture {arch!r} in {path.name} (supported: llama)")
    a = "llama."
    try:
        hidden = int(_field(reader, a + "embedding_length"))
        n_heads = int(_field(reader, a + "attention.head_count"))
        n_kv = int(_field(reader, a + "attention.head_count_kv", n_heads))
        tokens = _field(reader, "tokenizer.ggml.tokens")
        eos = _field(reader, "tokenizer.ggml.eos_token_id")
        cfg = LlamaConfig(
            vocab_size=len(tokens),
            hidden_size=hidden,
            intermediate_size=int(_field(reader, a + "feed_forward_length")),
            n_layers=int(_field(reader, a + "block_count")),
            n_heads=n_heads,
            n_kv_heads=n_kv,
            head_dim=int(_field(reader, a + "rope.dimension_count", hidden // n_heads)),
            rope_theta=float(_field(reader, a + "rope.freq_base", 10000.0)),
            rms_eps=float(_field(reader, a + "attention.layer_norm_rms_epsilon", 1e-5)),
            max_context=int(_field(reader, a + "context_length", 2048)),
            tie_embeddings=not any(t.name == "output.weight" for t in reader.tensors),
            bos_id=_field(reader, "tokenizer.ggml.bos_token_id"),
            eos_ids=(int(eos),) if eos is not None else (),
        )
    except (TypeError, ValueError) as exc:
        raise ModelLoadError(f"{path.name} lacks required llama metadata ({exc})") from None

    weights: dict[str, np.ndarray] = {}
    qtypes: dict[str, str] = {}
    n = len(reader.tensors)
    for i, t in enumerate(reader.tensors):
        qname = t.tensor_type.name
        if qname not in SUPPORTED_QTYPES:
            raise ModelLoadError(f"unsupported quantization type {qname} for tensor {t.name}")
        arr = np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float32)
        shape = tuple(int(d) for d in reversed(list(t.shape)))
        arr = arr.reshape(shape)
        name = _hf_name(t.name)
        if name is None:
            continue
        if name.endswith("q_proj.weight"):
            arr = _unpermute(arr, cfg.n_heads)
        elif name.endswith("k_proj.weight"):
            arr = _unpermute(arr, cfg.n_kv_heads)
        weights[name] = arr
        qtypes[name] = qname
        if on_progress is not None:
            on_progress(i + 1, n)
    if "model.embed_tokens.weight" not in weights:
        raise ModelLoadError(f"{path.name} has no token embedding tensor")
    meta = {
        "model": _field(reader, "tokenizer.ggml.model"),
        "pre": _field(reader, "tokenizer.ggml.pre"),
        "tokens": list(tokens),
        "merges": list(_field(reader, "tokenizer.ggml.merges", [])),
        "token_type": list(_field(reader, "tokenizer.ggml.token_type", [])),
        "bos_id": cfg.bos_id,
        "eos_id": eos,
        "add_bos": bool(_field(reader, "tokenizer.ggml.add_bos_token", False)),
    }
    return GgufModel(cfg, weights, meta, _field(reader, "tokenizer.chat_template"), qtypes)


def _hf_name(name: str) -> str | None:
    if name == "token_embd.weight":
        return "model.embed_tokens.weight"
    if name == "output_norm.weight":
        return "model.norm.weight"
    if name == "output.weight":
        return "lm_head.weight"
    if name.startswith("blk."):
        _, idx, rest = name.split(".", 2)
        key = rest.rsplit(".", 1)[0]
        if key in _LAYER_MAP:
            return f"model.layers.{idx}.{_LAYER_MAP[key]}"
    if name == "rope_freqs.weight":
        return None
    return None
