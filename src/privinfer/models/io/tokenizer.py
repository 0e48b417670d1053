"""Tokenizers and chat templates rebuilt from model metadata (GGUF or tokenizer.json), offline."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from privinfer.errors import InputError, ModelLoadError

_CONTROL = 3  # llama.cpp token_type for control (special) tokens
_USER_DEFINED = 4


class Tokenizer:
    """Text <-> token ids, plus the chat template; wraps a `tokenizers.Tokenizer`."""

    def __init__(
        self,
        backend: Any,
        *,
        eos_ids: Sequence[int] = (),
        bos_id: int | None = None,
        add_bos: bool = False,
        chat_template: str | None = None,
    ) -> None:
        self._tok = backend
        self.eos_ids = tuple(eos_ids)
        self.bos_id = bos_id
        self.add_bos = add_bos
        self.chat_template = chat_template

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str, *, special: bool = True) -> list[int]:
        ids = self._tok.encode(text, add_special_tokens=False).ids
        if special and self.add_bos and self.bos_id is not None:
            ids = [self.bos_id, *ids]
        return ids

    def encode_with_specials(self, text: str) -> list[int]:
        """Encode with the tokenizer's own post-processor (e.g. BERT's [CLS] ... [SEP])."""
        return self._tok.encode(text, add_special_tokens=True).ids

    def decode(self, ids: Iterable[int], *, skip_special: bool = True) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=skip_special)

    def apply_chat(
        self, messages: list[dict[str, str]], *, add_generation_prompt: bool = True
    ) -> str:
        """Render `messages` with the model's own chat template (sandboxed Jinja)."""
        if not self.chat_template:
            raise InputError("this model has no chat template; pass chat=False to send raw text")
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        env = ImmutableSandboxedEnvironment(trim_blocks=False, lstrip_blocks=False)
        tmpl = env.from_string(self.chat_template)
        return tmpl.render(
            messages=messages,
            add_generation_prompt=add_generation_prompt,
            bos_token="",
            eos_token="",
        )

    def stream_decoder(self) -> StreamDecoder:
        return StreamDecoder(self)


class StreamDecoder:
    """Turns a growing list of ids into text deltas, holding back incomplete UTF-8 sequences."""

    def __init__(self, tok: Tokenizer) -> None:
        self._tok = tok
        self._ids: list[int] = []
        self._emitted = ""

    def push(self, token_id: int) -> str:
        self._ids.append(token_id)
        text = self._tok.decode(self._ids)
        if text.endswith("\ufffd"):
            return ""
        delta = text[len(self._emitted) :] if text.startswith(self._emitted) else ""
        self._emitted = text
        return delta

    def __iter__(self) -> Iterator[str]:  # pragma: no cover - convenience
        yield self._emitted


def from_gguf_meta(meta: dict[str, Any], chat_template: str | None) -> Tokenizer:
    """Rebuild a GPT-2 style byte-level BPE tokenizer from GGUF `tokenizer.ggml.*` metadata."""
    from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers
    from tokenizers import Tokenizer as HfTokenizer

    if meta.get("model") != "gpt2":
        raise ModelLoadError(
            f"unsupported GGUF tokenizer model {meta.get('model')!r} (supported: gpt2 byte-level BPE)"
        )
    tokens: list[str] = meta["tokens"]
    vocab = {t: i for i, t in enumerate(tokens)}
    merges = [tuple(m.split(" ", 1)) for m in meta["merges"]]
    bpe = models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False)
    tok = HfTokenizer(bpe)
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    pre = meta.get("pre")
    if pre in ("smollm", "starcoder", "refact", "qwen2", "llama-bpe", "llama3"):
        # These pre-tokenizers split every digit on its own before the GPT-2 regex.
        digits = (
            pre_tokenizers.Split(Regex(r"\p{N}"), behavior="isolated")
            if pre in ("llama-bpe", "llama3")
            else pre_tokenizers.Digits(individual_digits=True)
        )
        tok.pre_tokenizer = pre_tokenizers.Sequence([digits, byte_level])
    else:
        tok.pre_tokenizer = byte_level
    tok.decoder = decoders.ByteLevel()
    types = meta.get("token_type") or []
    specials = [
        AddedToken(tokens[i], special=True, normalized=False)
        for i, t in enumerate(types)
        if t in (_CONTROL, _USER_DEFINED)
    ]
    if specials:
        tok.add_special_tokens(specials)
    eos = meta.get("eos_id")
    return Tokenizer(
        tok,
        eos_ids=(eos,) if eos is not None else (),
        bos_id=meta.get("bos_id"),
        add_bos=bool(meta.get("add_bos")),
        chat_template=chat_template,
    )


def from_tokenizer_json(
    folder: Path,
    *,
    eos_ids: Sequence[int] = (),
    bos_id: int | None = None,
    chat_template: str | None = None,
) -> Tokenizer:
    """Load a Hugging Face `tokenizer.json` from `folder`."""
    from tokenizers import Tokenizer as HfTokenizer

    path = folder / "tokenizer.json"
    if not path.is_file():
        raise ModelLoadError(f"no tokenizer.json in {folder}")
    try:
        tok = HfTokenizer.from_file(str(path))
    except Exception as exc:
        raise ModelLoadError(f"cannot read {path.name}: {type(exc).__name__}") from None
    tok.no_padding()  # some exports pad every text to a fixed length
    tok.no_truncation()  # a too-long input is an error the caller reports, never silently cut
    return Tokenizer(tok, eos_ids=eos_ids, bos_id=bos_id, chat_template=chat_template)
