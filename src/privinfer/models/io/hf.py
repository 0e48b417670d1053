"""Read a Hugging Face model folder (config.json, *.safetensors), offline and family-independent;
a family's converter turns the config and tensor names into its own."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from privinfer.errors import ModelLoadError


def read_json(path: Path) -> dict[str, Any]:
    """The JSON object in `path`; {} when the file does not exist."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot read {path.name}: {type(exc).__name__}") from None


def read_config(folder: Path) -> dict[str, Any]:
    """config.json of `folder` (it must exist)."""
    cfg = read_json(folder / "config.json")
    if not cfg:
        raise ModelLoadError(f"no config.json in {folder}")
    return cfg


def read_safetensors(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of the folder's *.safetensors files, as float32, under its stored name."""
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
