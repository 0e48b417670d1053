"""GPT-2 family converters: a Hugging Face GPT-2 folder to `GPT2Config` and this definition's
weight layout (HF stores `Conv1D` weights as [in, out] and fuses q/k/v in `c_attn`)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from privinfer.errors import ModelLoadError
from privinfer.models.gpt2 import GPT2Config
from privinfer.models.io.tokenizer import Tokenizer, from_tokenizer_json

# "gelu_new" (tanh) is GPT-2's own; the definition computes the exact erf GeLU (< 1e-3 apart).
_ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh")


def hf_config(cfg: dict[str, Any], folder: Path) -> GPT2Config:
    """`GPT2Config` from a gpt2 config.json (n_embd, n_layer, n_head, n_positions)."""
    act = cfg.get("activation_function", "gelu_new")
    if act not in _ACTIVATIONS:
        raise ModelLoadError(f"unsupported GPT-2 activation {act!r}")
    if cfg.get("n_inner") not in (None, 4 * int(cfg["n_embd"])):
        raise ModelLoadError("GPT-2 with an MLP width other than 4 x n_embd is not supported")
    eos = cfg.get("eos_token_id")
    return GPT2Config(
        vocab_size=int(cfg["vocab_size"]),
        hidden_size=int(cfg["n_embd"]),
        n_layers=int(cfg["n_layer"]),
        n_heads=int(cfg["n_head"]),
        max_positions=int(cfg.get("n_positions", 1024)),
        ln_eps=float(cfg.get("layer_norm_epsilon", 1e-5)),
        eos_ids=(int(eos),) if eos is not None else (),
    )


def hf_tokenizer(folder: Path, cfg: GPT2Config) -> Tokenizer:
    return from_tokenizer_json(folder, eos_ids=cfg.eos_ids)


def from_hf_state_dict(sd: Mapping[str, torch.Tensor], cfg: GPT2Config) -> dict[str, torch.Tensor]:
    """Hugging Face `GPT2Model` / `GPT2LMHeadModel` tensors -> the `GPT2` definition's layout."""
    d, out = cfg.hidden_size, {}
    pre = "transformer." if "transformer.wte.weight" in sd else ""
    try:
        out["wte"], out["wpe"] = sd[pre + "wte.weight"], sd[pre + "wpe.weight"]
        for i in range(cfg.n_layers):
            h, p = f"{pre}h.{i}.", f"h.{i}."
            qkv_w, qkv_b = sd[h + "attn.c_attn.weight"].T, sd[h + "attn.c_attn.bias"]
            for j, n in enumerate(("q", "k", "v")):
                out[p + n + ".w"] = qkv_w[j * d : (j + 1) * d].contiguous()
                out[p + n + ".b"] = qkv_b[j * d : (j + 1) * d].contiguous()
            for n, src in (("o", "attn.c_proj"), ("fc", "mlp.c_fc"), ("proj", "mlp.c_proj")):
                out[p + n + ".w"] = sd[h + src + ".weight"].T.contiguous()
                out[p + n + ".b"] = sd[h + src + ".bias"]
            for ln in ("ln_1", "ln_2"):
                out[p + ln + ".w"], out[p + ln + ".b"] = (
                    sd[h + ln + ".weight"],
                    sd[h + ln + ".bias"],
                )
        out["ln_f.w"], out["ln_f.b"] = sd[pre + "ln_f.weight"], sd[pre + "ln_f.bias"]
    except KeyError as exc:
        raise ModelLoadError(f"the GPT-2 weights lack tensor {exc.args[0]}") from None
    return out
