"""The Python face of privinfer: load a model by name or path, generate or embed in a mode.

    import privinfer
    lm = privinfer.load("smollm2-135m")
    for piece in lm.stream("What is the capital of France?"):
        print(piece, end="")
    emb = privinfer.load("minilm-l6").embed(["a sentence", "another"])

`mode="plain"` runs locally; every mode, plain included, is a plug-in of `privinfer.modes`, whose
options are checked (one error type, the CLI's flag names) before anything runs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from privinfer.engines.plain import PlainOps
from privinfer.errors import InputError
from privinfer.models import families
from privinfer.models.config import BertConfig
from privinfer.models.costs import CostReport, EmbeddingStats, peak_rss_mb
from privinfer.models.generate import GenerationStats
from privinfer.models.io.tokenizer import Tokenizer
from privinfer.models.loaded import LoadedDecoder, LoadedEncoder
from privinfer.models.ops import Sampler
from privinfer.models.registry import resolve
from privinfer.modes import Mode, Request, check_sampling
from privinfer.modes import get as get_mode

ProgressFn = Callable[[int, int], None]


def set_threads(n: int | None) -> int:
    """Set torch's intra-op threads (None leaves the default); return the count in force."""
    if n is not None:
        if n < 1:
            raise InputError("--threads must be at least 1")
        torch.set_num_threads(n)
    return torch.get_num_threads()


def _mode(name: str) -> Mode:
    return get_mode(name)


@dataclass
class Generation:
    """A finished generation: text, ids and its statistics (timings, engine costs, mode figures)."""

    text: str
    token_ids: list[int]
    stats: GenerationStats
    mode: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "text": self.text,
            "token_ids": self.token_ids,
            **self.stats.to_dict(),
            "peak_rss_mb": round(peak_rss_mb(), 1),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict())


@dataclass
class Embeddings:
    """Embeddings [n, dim] with the engine's costs and the mode's own figures."""

    vectors: torch.Tensor
    mode: str
    stats: EmbeddingStats = field(default_factory=EmbeddingStats)

    @property
    def costs(self) -> CostReport:
        return self.stats.costs

    @property
    def details(self) -> dict[str, Any]:
        return self.stats.details


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


class _Runnable:
    """The plain engine bound to a loaded model, once (the reference every mode is checked against)."""

    _plain: Any = None

    def plain(self: Any) -> Any:
        if self._plain is None:
            self._plain = self.build(PlainOps())
        return self._plain


class LanguageModel(_Runnable, LoadedDecoder):
    """A decoder (a family with task "generate") with its tokenizer, runnable in any mode."""

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
        """Stream the answer to `prompt` as text deltas; see `TextStream.result` afterwards.

        `mode_options` are the mode's own (`privinfer.modes.get(mode).options`); an option the
        mode does not take is refused before anything runs."""
        plugin = _mode(mode)
        options = plugin.check_options("generate", mode_options)
        check_sampling(temperature, top_p, seed)
        if max_new_tokens < 1:
            raise InputError("--max-tokens must be at least 1")
        ids = self.prompt_ids(prompt, chat=chat)
        sampler = Sampler(temperature=temperature, top_p=top_p, seed=seed)
        stats = GenerationStats()
        gen = plugin.generate(self, Request(ids, sampler, max_new_tokens), stats, **options)
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


class EmbeddingModel(_Runnable, LoadedEncoder):
    """A sentence encoder (a family with task "embed") with its tokenizer, runnable in any mode."""

    cfg: BertConfig

    def embed(
        self, texts: str | Sequence[str], *, mode: str = "plain", **mode_options: Any
    ) -> torch.Tensor:
        """Embeddings of `texts` as a [n, dim] float tensor (L2-normalised for sentence models)."""
        return self.embed_with_stats(texts, mode=mode, **mode_options).vectors

    def embed_with_stats(
        self, texts: str | Sequence[str], *, mode: str = "plain", **mode_options: Any
    ) -> Embeddings:
        """Embeddings with the engine's costs and the mode's figures (rounds, bytes, fidelity)."""
        plugin = _mode(mode)
        options = plugin.check_options("embed", mode_options)
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not texts:
            raise InputError("no texts to embed")
        ids = [self.token_ids(t) for t in texts]
        stats = EmbeddingStats()
        return Embeddings(plugin.embed(self, ids, stats, **options), mode, stats)


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
