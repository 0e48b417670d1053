"""Read a GGUF file, family-independent: metadata fields, dequantized float32 tensors (under
their GGUF names), tokenizer metadata. A family's converter maps names and hyper-parameters."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from privinfer.errors import ModelLoadError

SUPPORTED_QTYPES = {
    "F32",
    "F16",
    "BF16",
    "Q8_0",
    "Q4_0",
    "Q4_1",
    "Q5_0",
    "Q5_1",
    "Q4_K",
    "Q5_K",
    "Q6_K",
}

ProgressFn = Callable[[int, int], None]


class GgufFile:
    """An opened, size-checked GGUF file; tensors are read and dequantized on demand."""

    def __init__(self, path: str | Path) -> None:
        import gguf

        self.path = path = Path(path)
        if not path.is_file():
            raise ModelLoadError(f"model file not found: {path}")
        try:
            with open(path, "rb") as fh:
                if fh.read(4) != b"GGUF":
                    raise ModelLoadError(f"{path.name} is not a GGUF file (bad magic)")
            self.reader = gguf.GGUFReader(path)
        except ModelLoadError:
            raise
        except Exception as exc:  # the gguf package raises many kinds on corrupt input
            raise ModelLoadError(
                f"{path.name} is truncated or corrupt ({type(exc).__name__})"
            ) from None
        size = os.path.getsize(path)
        for t in self.reader.tensors:
            if t.data_offset + t.n_bytes > size:
                raise ModelLoadError(f"{path.name} is truncated: tensor {t.name} runs past the end")

    @property
    def architecture(self) -> str | None:
        return self.field("general.architecture")

    @property
    def chat_template(self) -> str | None:
        return self.field("tokenizer.chat_template")

    def field(self, key: str, default: Any = None) -> Any:
        f = self.reader.fields.get(key)
        return default if f is None else f.contents()

    def has_tensor(self, name: str) -> bool:
        return any(t.name == name for t in self.reader.tensors)

    def tensors(
        self, on_progress: ProgressFn | None = None
    ) -> Iterator[tuple[str, np.ndarray, str]]:
        """(GGUF name, float32 array in [out, in] order, quantization type) of every tensor."""
        import gguf

        n = len(self.reader.tensors)
        for i, t in enumerate(self.reader.tensors):
            qname = t.tensor_type.name
            if qname not in SUPPORTED_QTYPES:
                raise ModelLoadError(f"unsupported quantization type {qname} for tensor {t.name}")
            arr = np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float32)
            yield t.name, arr.reshape(tuple(int(d) for d in reversed(list(t.shape)))), qname
            if on_progress is not None:
                on_progress(i + 1, n)

    def tokenizer_meta(self) -> dict[str, Any]:
        """The `tokenizer.ggml.*` fields `io.tokenizer.from_gguf_meta` rebuilds a tokenizer from."""
        return {
            "model": self.field("tokenizer.ggml.model"),
            "pre": self.field("tokenizer.ggml.pre"),
            "tokens": list(self.field("tokenizer.ggml.tokens", [])),
            "merges": list(self.field("tokenizer.ggml.merges", [])),
            "token_type": list(self.field("tokenizer.ggml.token_type", [])),
            "bos_id": self.field("tokenizer.ggml.bos_token_id"),
            "eos_id": self.field("tokenizer.ggml.eos_token_id"),
            "add_bos": bool(self.field("tokenizer.ggml.add_bos_token", False)),
        }
