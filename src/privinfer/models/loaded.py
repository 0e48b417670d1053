"""A loaded model, engine-free: family, config, float weights, tokenizer and how prompts and
texts become token ids. `privinfer.api` adds running in a mode; the enclave binds it to the plain
engine itself."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from privinfer.errors import InputError
from privinfer.models import families
from privinfer.models.io.tokenizer import Tokenizer


class LoadedModel:
    """A model definition's config, float weights, tokenizer and source."""

    def __init__(
        self, name: str, cfg: Any, weights: dict[str, torch.Tensor], tok: Tokenizer, source: Path
    ) -> None:
        self.name, self.cfg, self.weights, self.tokenizer, self.source = (
            name,
            cfg,
            weights,
            tok,
            source,
        )
        self.load_s = 0.0
        self.family = families.get(cfg)

    @property
    def kind(self) -> str:
        """The model family's name ("llama", "bert", "gpt2")."""
        return self.family.name

    @property
    def definition(self) -> Any:
        """The model class written against Ops (`Llama`, `Bert`, `GPT2`)."""
        return self.family.model_class

    def build(self, ops: Any) -> Any:
        """The shared model definition bound to an engine (weights prepared once per engine)."""
        return self.family.build(self.cfg, self.weights, ops)


class LoadedDecoder(LoadedModel):
    """A decoder (a family with task "generate"): prompts become token ids, chat or raw."""

    def prompt_ids(self, prompt: str | Sequence[dict[str, str]], *, chat: bool = True) -> list[int]:
        if isinstance(prompt, str):
            if not prompt.strip():
                raise InputError("the prompt is empty")
            messages = [{"role": "user", "content": prompt}]
        else:
            messages = [dict(m) for m in prompt]
            if not messages or not any(m.get("content", "").strip() for m in messages):
                raise InputError("the prompt is empty")
        if chat and self.tokenizer.chat_template:
            text = self.tokenizer.apply_chat(messages)
        else:
            text = "\n".join(m["content"] for m in messages)
        return self.tokenizer.encode(text)


class LoadedEncoder(LoadedModel):
    """A sentence encoder (a family with task "embed"): texts become token ids with specials."""

    def token_ids(self, text: str) -> list[int]:
        if not text.strip():
            raise InputError("cannot embed an empty text")
        ids = self.tokenizer.encode_with_specials(
            text
        )  # BERT's post-processor adds [CLS] ... [SEP]
        if len(ids) > self.cfg.max_positions:
            raise InputError(
                f"the text has {len(ids)} tokens, more than the model's limit of {self.cfg.max_positions}"
            )
        return ids
