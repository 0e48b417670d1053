"""Tiny random-weight models (LLaMA, byte-level tokenizer) for tests and engine dry runs.

Also writes them as a GGUF file or a Hugging Face folder, so the real loading code is tested
without the large models.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from privinfer.models.config import LlamaConfig

SPECIALS = ["<|im_start|>", "<|im_end|>"]
CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] "
    "+ '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
    "{% endif %}"
)


def byte_vocab() -> list[str]:
    """The 256 GPT-2 byte-level symbols followed by the ChatML specials (ids 256, 257)."""
    from tokenizers import pre_tokenizers

    return sorted(pre_tokenizers.ByteLevel.alphabet()) + SPECIALS


def tiny_llama_config(
    *, hidden: int = 64, layers: int = 2, heads: int = 4, kv_heads: int = 2, ffn: int = 128
) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=len(byte_vocab()),
        hidden_size=hidden,
        intermediate_size=ffn,
        n_layers=layers,
        n_heads=heads,
        n_kv_heads=kv_heads,
        head_dim=hidden // heads,
        rope_theta=10000.0,
        rms_eps=1e-5,
        max_context=256,
        tie_embeddings=True,
        bos_id=256,
        eos_ids=(257,),
    )


def tiny_llama_weights(cfg: LlamaConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights in HF naming and layout, scaled so activations stay O(1)."""
    g = torch.Generator().manual_seed(seed)
    h, f, hd = cfg.hidden_size, cfg.intermediate_size, cfg.head_dim

    def r(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g) / shape[-1] ** 0.5

    w = {
        "model.embed_tokens.weight": torch.randn(cfg.vocab_size, h, generator=g),
        "model.norm.weight": 1 + 0.1 * torch.randn(h, generator=g),
    }
    for i in range(cfg.n_layers):
        p = f"model.layers.{i}."
        w[p + "input_layernorm.weight"] = 1 + 0.1 * torch.randn(h, generator=g)
        w[p + "post_attention_layernorm.weight"] = 1 + 0.1 * torch.randn(h, generator=g)
        w[p + "self_attn.q_proj.weight"] = r(cfg.n_heads * hd, h)
        w[p + "self_attn.k_proj.weight"] = r(cfg.n_kv_heads * hd, h)
        w[p + "self_attn.v_proj.weight"] = r(cfg.n_kv_heads * hd, h)
        w[p + "self_attn.o_proj.weight"] = r(h, cfg.n_heads * hd)
        w[p + "mlp.gate_proj.weight"] = r(f, h)
        w[p + "mlp.up_proj.weight"] = r(f, h)
        w[p + "mlp.down_proj.weight"] = r(h, f)
    return w


def _permute(w: np.ndarray, n_heads: int) -> np.ndarray:
    """llama.cpp's q/k row order (the inverse of the loader's un-permute)."""
    out_dim, in_dim = w.shape
    return (
        w.reshape(n_heads, 2, out_dim // n_heads // 2, in_dim)
        .swapaxes(1, 2)
        .reshape(out_dim, in_dim)
    )


_GGUF_NAMES = {
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
    "input_layernorm.weight": "attn_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
}


def write_gguf(
    path: Path,
    cfg: LlamaConfig,
    weights: dict[str, torch.Tensor],
    *,
    arch: str = "llama",
    quantize_q8: bool = False,
) -> Path:
    import gguf

    wr = gguf.GGUFWriter(str(path), arch)
    wr.add_block_count(cfg.n_layers)
    wr.add_context_length(cfg.max_context)
    wr.add_embedding_length(cfg.hidden_size)
    wr.add_feed_forward_length(cfg.intermediate_size)
    wr.add_head_count(cfg.n_heads)
    wr.add_head_count_kv(cfg.n_kv_heads)
    wr.add_rope_freq_base(cfg.rope_theta)
    wr.add_rope_dimension_count(cfg.head_dim)
    wr.add_layer_norm_rms_eps(cfg.rms_eps)
    wr.add_tokenizer_model("gpt2")
    wr.add_tokenizer_pre("default")
    vocab = byte_vocab()
    wr.add_token_list(vocab)
    wr.add_token_merges([])
    wr.add_token_types([1] * 256 + [3, 3])
    wr.add_bos_token_id(256)
    wr.add_eos_token_id(257)
    wr.add_chat_template(CHATML)
    for name, t in weights.items():
        a = t.detach().numpy().astype(np.float32)
        if name.endswith("q_proj.weight"):
            a = _permute(a, cfg.n_heads)
        elif name.endswith("k_proj.weight"):
            a = _permute(a, cfg.n_kv_heads)
        if name == "model.embed_tokens.weight":
            gname = "token_embd.weight"
        elif name == "model.norm.weight":
            gname = "output_norm.weight"
        else:
            i, rest = name[len("model.layers.") :].split(".", 1)
            gname = f"blk.{i}.{_GGUF_NAMES[rest]}"
        if quantize_q8 and a.ndim == 2:
            q = gguf.quants.quantize(a, gguf.GGMLQuantizationType.Q8_0)
            wr.add_tensor(gname, q, raw_shape=q.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            wr.add_tensor(gname, a)
    wr.write_header_to_file()
    wr.write_kv_data_to_file()
    wr.write_tensors_to_file()
    wr.close()
    return path


def write_hf_folder(folder: Path, cfg: LlamaConfig, weights: dict[str, torch.Tensor]) -> Path:
    """config.json + model.safetensors + tokenizer.json (byte-level BPE) + tokenizer_config.json."""
    from safetensors.torch import save_file
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(
        json.dumps(
            {
                "model_type": "llama",
                "architectures": ["LlamaForCausalLM"],
                "vocab_size": cfg.vocab_size,
                "hidden_size": cfg.hidden_size,
                "intermediate_size": cfg.intermediate_size,
                "num_hidden_layers": cfg.n_layers,
                "num_attention_heads": cfg.n_heads,
                "num_key_value_heads": cfg.n_kv_heads,
                "rope_theta": cfg.rope_theta,
                "rms_norm_eps": cfg.rms_eps,
                "max_position_embeddings": cfg.max_context,
                "tie_word_embeddings": cfg.tie_embeddings,
                "bos_token_id": cfg.bos_id,
                "eos_token_id": cfg.eos_ids[0],
                "hidden_act": "silu",
                "torch_dtype": "float32",
            }
        )
    )
    save_file({k: v.contiguous() for k, v in weights.items()}, str(folder / "model.safetensors"))
    vocab = byte_vocab()
    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(vocab)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(SPECIALS)
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({"chat_template": CHATML}))
    return folder
