"""Architecture hyper-parameters of the model families privinfer runs (public, not secret)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LlamaConfig:
    """A LLaMA-family decoder: RMSNorm, RoPE, GQA attention, SwiGLU MLP."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    rope_theta: float = 10000.0
    rms_eps: float = 1e-5
    max_context: int = 2048
    tie_embeddings: bool = True
    bos_id: int | None = None
    eos_ids: tuple[int, ...] = ()


@dataclass(frozen=True)
class BertConfig:
    """A BERT encoder: learned positions, post-LayerNorm blocks, GELU MLP, mean pooling."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    n_layers: int
    n_heads: int
    max_positions: int = 512
    type_vocab_size: int = 2
    ln_eps: float = 1e-12
    normalize: bool = True
