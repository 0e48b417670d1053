"""The tokenizer rebuilt from GGUF metadata against transformers' GGUF tokenizer."""

from __future__ import annotations

import pytest

SAMPLES = [
    "What is the capital of France?",
    "Numbers 1234567 and 3.14159, dates 2026-11-26.",
    "Unicode: héllo wörld, 東京, emoji 🙂, tabs\tand\nnewlines   spaces",
    "<|im_start|>user\nspecial tokens<|im_end|>\n",
    "def f(x):\n    return x**2  # code",
]


@pytest.fixture(scope="module")
def hf_tok(smollm):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(smollm.source.parent), gguf_file=smollm.source.name)


@pytest.mark.parametrize("text", SAMPLES)
def test_ids_match_transformers(smollm, hf_tok, text):
    assert smollm.tokenizer.encode(text) == hf_tok(text, add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize("text", SAMPLES)
def test_roundtrip(smollm, text):
    tok = smollm.tokenizer
    assert tok.decode(tok.encode(text), skip_special=False) == text


def test_chat_template_inserts_default_system_prompt(smollm):
    text = smollm.tokenizer.apply_chat([{"role": "user", "content": "Hi"}])
    assert text.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    assert text.endswith("<|im_start|>assistant\n")
    ids = smollm.prompt_ids("Hi")
    assert ids[0] == 1 and 2 in ids  # <|im_start|>, <|im_end|>


def test_stream_decoder_holds_back_partial_utf8(smollm):
    tok = smollm.tokenizer
    ids = tok.encode("東京🙂")
    dec = tok.stream_decoder()
    pieces = [dec.push(i) for i in ids]
    assert "".join(pieces) == "東京🙂"
    assert all("\ufffd" not in p for p in pieces)
