"""The model families privinfer runs, in one table, and the one way to load a model's weights.

A `Family` names its config class, its model class (the definition written against `Ops`), its
converters (Hugging Face folder, GGUF where it has a reader), how its tokenizer is built and its
task: "generate" for decoders, "embed" for encoders. Loaders, the api and the engines look a
family up here (`by_name`, `get(cfg)`) instead of comparing family names. Adding a family means
one entry in `FAMILIES` plus the family's own files (definition, `convert_<name>.py`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from privinfer.errors import ModelLoadError
from privinfer.models import bert, convert_bert, convert_gpt2, convert_llama, gpt2, llama
from privinfer.models.config import BertConfig, LlamaConfig
from privinfer.models.io.gguf import GgufFile, ProgressFn
from privinfer.models.io.hf import read_config, read_safetensors
from privinfer.models.io.tokenizer import Tokenizer, from_gguf_meta

Task = Literal["generate", "embed"]
Weights = dict[str, torch.Tensor]


def _as_stored(weights: Weights, cfg: Any) -> Weights:
    return weights


@dataclass(frozen=True)
class Family:
    """One model family: what to build, from what, and what it is for."""

    name: str  # the HF `model_type` and GGUF `general.architecture` it is read from
    task: Task
    config_class: type
    model_class: type  # (cfg, weights, ops) -> the definition bound to an engine
    hf_config: Callable[[dict[str, Any], Path], Any]  # config.json dict, folder -> config
    hf_tokenizer: Callable[[Path, Any], Tokenizer]  # folder, config -> tokenizer
    hf_weights: Callable[[Weights, Any], Weights] = _as_stored  # HF names -> definition's
    gguf: Callable[[GgufFile, ProgressFn | None], tuple[Any, Weights]] | None = None
    # float64 input rows computable from public tables alone (engines whose client embeds)
    input_rows: Callable[[Any, Mapping[str, torch.Tensor], Sequence[int]], torch.Tensor] | None = (
        None
    )

    def build(self, cfg: Any, weights: Mapping[str, torch.Tensor], ops: Any) -> Any:
        """The definition bound to an engine (weights prepared through `ops`)."""
        return self.model_class(cfg, weights, ops)

    def config(self, fields: Mapping[str, Any]) -> Any:
        """The config from its `dataclasses.asdict` form (lists, as JSON keeps them, -> tuples)."""
        return self.config_class(
            **{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}
        )


FAMILIES: dict[str, Family] = {
    "llama": Family(
        "llama",
        "generate",
        LlamaConfig,
        llama.Llama,
        convert_llama.hf_config,
        convert_llama.hf_tokenizer,
        gguf=convert_llama.from_gguf,
        input_rows=llama.input_rows,
    ),
    "bert": Family(
        "bert",
        "embed",
        BertConfig,
        bert.Bert,
        convert_bert.hf_config,
        convert_bert.hf_tokenizer,
        input_rows=bert.input_rows,
    ),
    "gpt2": Family(
        "gpt2",
        "generate",
        gpt2.GPT2Config,
        gpt2.GPT2,
        convert_gpt2.hf_config,
        convert_gpt2.hf_tokenizer,
        hf_weights=convert_gpt2.from_hf_state_dict,
    ),
}


def by_name(name: str) -> Family:
    """The family called `name`; ModelLoadError naming the known ones otherwise."""
    fam = FAMILIES.get(name)
    if fam is None:
        raise ModelLoadError(f"unknown model family {name!r} (known: {', '.join(FAMILIES)})")
    return fam


def get(cfg: Any) -> Family:
    """The family whose config class `cfg` is an instance of."""
    for fam in FAMILIES.values():
        if isinstance(cfg, fam.config_class):
            return fam
    raise ModelLoadError(f"{type(cfg).__name__} is the config of no known model family")


@dataclass
class LoadedWeights:
    """A model read from disk: its family, config, float32 weights and tokenizer."""

    family: Family
    cfg: Any
    weights: Weights
    tokenizer: Tokenizer


def read_gguf(path: str | Path, *, on_progress: ProgressFn | None = None) -> LoadedWeights:
    """A GGUF file, read by the converter of the family its `general.architecture` names."""
    g = GgufFile(path)
    arch = g.architecture
    fam = FAMILIES.get(arch) if isinstance(arch, str) else None
    if fam is None or fam.gguf is None:
        known = ", ".join(f.name for f in FAMILIES.values() if f.gguf is not None)
        raise ModelLoadError(
            f"unsupported architecture {arch!r} in {g.path.name} (supported: {known})"
        )
    cfg, weights = fam.gguf(g, on_progress)
    return LoadedWeights(fam, cfg, weights, from_gguf_meta(g.tokenizer_meta(), g.chat_template))


def read_hf_folder(folder: str | Path, *, on_progress: ProgressFn | None = None) -> LoadedWeights:
    """A Hugging Face folder (config.json, *.safetensors, tokenizer.json) of a known family."""
    folder = Path(folder)
    raw = read_config(folder)
    kind = raw.get("model_type")
    fam = FAMILIES.get(kind) if isinstance(kind, str) else None
    if fam is None:
        raise ModelLoadError(
            f"unsupported architecture {kind!r} in {folder} (supported: {', '.join(FAMILIES)})"
        )
    try:
        cfg = fam.hf_config(raw, folder)
    except KeyError as exc:
        raise ModelLoadError(f"config.json in {folder} lacks {exc.args[0]}") from None
    tok = fam.hf_tokenizer(folder, cfg)
    weights = fam.hf_weights(read_safetensors(folder), cfg)
    if on_progress is not None:
        on_progress(1, 1)
    return LoadedWeights(fam, cfg, weights, tok)


def load_weights(path: str | Path, *, on_progress: ProgressFn | None = None) -> LoadedWeights:
    """A model folder (Hugging Face) or a GGUF file (any other path, /proc/self/fd/N included)."""
    path = Path(path)
    if path.is_dir():
        return read_hf_folder(path, on_progress=on_progress)
    return read_gguf(path, on_progress=on_progress)
