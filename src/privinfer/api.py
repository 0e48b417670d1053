"""The Python face of privinfer: load a model by name or path, generate or embed in a mode.

    import privinfer
    lm = privinfer.load("smollm2-135m")
    for piece in lm.stream("What is the capital of France?"):
        print(piece, end="")
    emb = privinfer.load("minilm-l6").embed(["a sentence", "another"])

`mode="plain"` runs locally; private modes (tee, mpc, he) plug in through `privinfer.modes`.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from privinfer.errors import InputError
from privinfer.models import families
from privinfer.models.config import BertConfig
from privinfer.models.generate import GenerationStats, generate_ids
from privinfer.models.io.tokenizer import Tokenizer
from privinfer.models.ops import Sampler
from privinfer.models.registry import resolve

ProgressFn = Callable[[int, int], None]


def set_threads(n: int | None) -> int:
    """Set torch's intra-op threads (None leaves the default); return the count in force."""
    if n is not None:
        if n < 1:
            raise InputError("--threads must be at least 1")
        torch.set_num_threads(n)
    return torch.get_num_threads()


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


@dataclass
class Generation:
    """A finished generation: text, ids and timings (and engine costs where a mode has them)."""

    text: str
    token_ids: list[int]
    stats: GenerationStats
    mode: str
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "text": self.text,
            "token_ids": self.token_ids,
            **self.stats.to_json(),
            "peak_rss_mb": round(peak_rss_mb(), 1),
            **self.extra,
        }


class TextStream:
    """Iterates text deltas as tokens arrive; `.result` holds the Generation once exhausted."""

    def __init__(
        self, ids: Iterator[int], tok: Tokenizer, stats: GenerationStats, mode: str
    ) -> None:
        self._ids, self._tok, self._stats, self._mode = ids, tok, stats, mode
        self.token_ids: list[int] = []
        self.result: Generation | None = None

    def __iter__(self) -> Iterator[str]:
        dec = self._tok.stream_decoder()
        for t in self._ids:
            self.token_ids.append(t)
            delta = dec.push(t)
            if delta:
                yield delta
        self.result = Generation(
            self._tok.decode(self.token_ids), self.token_ids, self._stats, self._mode
        )


class _LoadedModel:
    """A model definition's config, float weights, tokenizer and source, runnable in any mode."""

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
        self._plain: Any = None
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

    def plain(self) -> Any:
        if self._plain is None:
            from privinfer.engines.plain import PlainOps

            self._plain = self.build(PlainOps())
        return self._plain


class LanguageModel(_LoadedModel):
    """A decoder (a family with task "generate") with its tokenizer, runnable in any mode."""

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

    def stream(
        self,
        prompt: str | Sequence[dict[str, str]],
        *,
        mode: str = "plain",
        chat: bool = True,
        max_new_tokens: int = 128,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int | None = None,
        **mode_options: Any,
    ) -> TextStream:
        """Stream the answer to `prompt` as text deltas; see `TextStream.result` afterwards."""
        if temperature < 0 or not 0 < top_p <= 1:
            raise InputError("temperature must be >= 0 and top_p in (0, 1]")
        ids = self.prompt_ids(prompt, chat=chat)
        sampler = Sampler(temperature=temperature, top_p=top_p, seed=seed)
        stats = GenerationStats()
        if mode == "plain":
            if mode_options:
                raise InputError(f"mode plain takes no options ({', '.join(mode_options)})")
            gen = generate_ids(
                self.plain(),
                ids,
                sampler=sampler,
                max_new_tokens=max_new_tokens,
                stop_ids=self.tokenizer.eos_ids,
                stats=stats,
            )
        else:
            from privinfer.modes import run_generation

            gen = run_generation(
                mode,
                self,
                ids,
                sampler=sampler,
                max_new_tokens=max_new_tokens,
                stats=stats,
                **mode_options,
            )
        return TextStream(gen, self.tokenizer, stats, mode)

    def generate(self, prompt: str | Sequence[dict[str, str]], **kwargs: Any) -> Generation:
        """Run to completion and return the Generation."""
        s = self.stream(prompt, **kwargs)
        for _ in s:
            pass
        assert s.result is not None
        return s.result

    def logits(self, prompt_ids: Sequence[int]) -> torch.Tensor:
        """Plain logits of every position of `prompt_ids` (a reference for tests and checks)."""
        m = self.plain()
        cache = m.new_cache()
        rows = [m.forward([t], cache, i)[-1] for i, t in enumerate(prompt_ids)]
        return torch.stack(rows)


class EmbeddingModel(_LoadedModel):
    """A sentence encoder (a family with task "embed") with its tokenizer, runnable in any mode."""

    cfg: BertConfig

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

    def embed(
        self, texts: str | Sequence[str], *, mode: str = "plain", **mode_options: Any
    ) -> torch.Tensor:
        """Embeddings of `texts` as a [n, dim] float tensor (L2-normalised for sentence models)."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not texts:
            raise InputError("no texts to embed")
        ids = [self.token_ids(t) for t in texts]
        if mode == "plain":
            m = self.plain()
            with torch.inference_mode():
                return torch.cat([m.ops.reveal(m.encode(i)) for i in ids])
        from privinfer.modes import run_embedding

        return run_embedding(mode, self, ids, **mode_options)


def load(
    name_or_path: str,
    *,
    threads: int | None = None,
    progress: ProgressFn | None = None,
) -> LanguageModel | EmbeddingModel:
    """Load a named model (`privinfer models`), a .gguf file or a Hugging Face folder."""
    set_threads(threads)
    _, path = resolve(name_or_path)
    t0 = time.perf_counter()
    w = families.load_weights(path, on_progress=progress)
    cls = LanguageModel if w.family.task == "generate" else EmbeddingModel
    model = cls(name_or_path, w.cfg, w.weights, w.tokenizer, path)
    model.load_s = time.perf_counter() - t0
    return model
