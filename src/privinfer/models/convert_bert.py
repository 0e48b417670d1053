"""BERT family converters: a Hugging Face / sentence-transformers folder to `BertConfig`.
Tensor names stay Hugging Face's (`Bert` accepts them with or without the `bert.` prefix)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from privinfer.errors import ModelLoadError
from privinfer.models.config import BertConfig
from privinfer.models.io.hf import read_json
from privinfer.models.io.tokenizer import Tokenizer, from_tokenizer_json


def hf_config(cfg: dict[str, Any], folder: Path) -> BertConfig:
    """`BertConfig` from config.json, sentence_bert_config.json and modules.json."""
    st = read_json(folder / "sentence_bert_config.json")
    modules = folder / "modules.json"
    out = BertConfig(
        vocab_size=int(cfg["vocab_size"]),
        hidden_size=int(cfg["hidden_size"]),
        intermediate_size=int(cfg["intermediate_size"]),
        n_layers=int(cfg["num_hidden_layers"]),
        n_heads=int(cfg["num_attention_heads"]),
        max_positions=int(st.get("max_seq_length", cfg.get("max_position_embeddings", 512))),
        type_vocab_size=int(cfg.get("type_vocab_size", 2)),
        ln_eps=float(cfg.get("layer_norm_eps", 1e-12)),
        normalize=modules.is_file() and "Normalize" in modules.read_text(),
    )
    if cfg.get("hidden_act", "gelu") != "gelu":
        raise ModelLoadError(f"unsupported BERT activation {cfg.get('hidden_act')!r}")
    return out


def hf_tokenizer(folder: Path, cfg: BertConfig) -> Tokenizer:
    return from_tokenizer_json(folder)
