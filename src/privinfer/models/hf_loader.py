"""Read a Hugging Face model folder (config.json + *.safetensors + tokenizer.json), offline."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from privinfer.errors import ModelLoadError
from privinfer.models.config import BertConfig, LlamaConfig
from privinfer.models.tokenizer import Tokenizer, from_tokenizer_json


def _json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot read {path.name}: {type(exc).__name__}") from None


def read_safetensors(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ModelLoadError(f"no *.safetensors weights in {folder}")
    out: dict[str, torch.Tensor] = {}
    for f in files:
        try:
            out.update({k: v.float() for k, v in load_file(str(f)).items()})
        except Exception as exc:
            raise ModelLoadError(
                f"{f.name} is truncated or corrupt ({type(exc).__name__})"
            ) from None
    return out


def read_hf_folder(
    folder: str | Path,
) -> tuple[str, LlamaConfig | BertConfig, dict[str, torch.Tensor], Tokenizer]:
    """Return (kind, config, float32 weights, tokenizer) for a llama or bert folder."""
    folder = Path(folder)
    cfg = _json(folder / "config.json")
    if not cfg:
        raise ModelLoadError(f"no config.json in {folder}")
    kind = cfg.get("model_type")
    tok_cfg = _json(folder / "tokenizer_config.json")
    gen_cfg = _json(folder / "generation_config.json")
    try:
        if kind == "llama":
            eos = gen_cfg.get("eos_token_id", cfg.get("eos_token_id"))
            eos_ids = tuple(eos) if isinstance(eos, list) else ((eos,) if eos is not None else ())
            n_heads = int(cfg["num_attention_heads"])
            c: LlamaConfig | BertConfig = LlamaConfig(
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
                eos_ids=eos_ids,
            )
            if cfg.get("rope_scaling"):
                raise ModelLoadError("rope_scaling is not supported yet")
            tok = from_tokenizer_json(
                folder, eos_ids=eos_ids, bos_id=c.bos_id, chat_template=tok_cfg.get("chat_template")
            )
        elif kind == "bert":
            st = _json(folder / "sentence_bert_config.json")
            c = BertConfig(
                vocab_size=int(cfg["vocab_size"]),
                hidden_size=int(cfg["hidden_size"]),
                intermediate_size=int(cfg["intermediate_size"]),
                n_layers=int(cfg["num_hidden_layers"]),
                n_heads=int(cfg["num_attention_heads"]),
                max_positions=int(
                    st.get("max_seq_length", cfg.get("max_position_embeddings", 512))
                ),
                type_vocab_size=int(cfg.get("type_vocab_size", 2)),
                ln_eps=float(cfg.get("layer_norm_eps", 1e-12)),
                normalize=(folder / "modules.json").is_file()
                and "Normalize" in (folder / "modules.json").read_text(),
            )
            if cfg.get("hidden_act", "gelu") != "gelu":
                raise ModelLoadError(f"unsupported BERT activation {cfg.get('hidden_act')!r}")
            tok = from_tokenizer_json(folder)
        else:
            raise ModelLoadError(
                f"unsupported architecture {kind!r} in {folder} (supported: llama, bert)"
            )
    except KeyError as exc:
        raise ModelLoadError(f"config.json in {folder} lacks {exc.args[0]}") from None
    return kind, c, read_safetensors(folder), tok
