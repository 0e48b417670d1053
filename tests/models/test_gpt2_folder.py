"""`privinfer.load` reaches GPT-2 through the families table: a tiny GPT-2 Hugging Face folder
(written here: config.json, random safetensors, a byte-level BPE tokenizer.json) loads as a
language model whose plain logits match transformers' GPT2LMHeadModel from the same folder."""

from __future__ import annotations

import json

import pytest
import torch

import privinfer
from privinfer.api import LanguageModel
from privinfer.models import families


def _write_gpt2_folder(folder, activation):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {t: i for i, t in enumerate(alphabet + ["<|endoftext|>"])}
    eos = vocab["<|endoftext|>"]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(["<|endoftext|>"])
    folder.mkdir(parents=True)
    tok.save(str(folder / "tokenizer.json"))
    cfg = GPT2Config(
        vocab_size=len(vocab),
        n_embd=32,
        n_layer=2,
        n_head=4,
        n_positions=64,
        activation_function=activation,
        bos_token_id=eos,
        eos_token_id=eos,
    )
    torch.manual_seed(0)
    model = GPT2LMHeadModel(cfg)
    with torch.no_grad():  # LayerNorms off their (1, 0) init so they are really tested
        for name, p in model.named_parameters():
            if ".ln_" in name or name.startswith("transformer.ln_f"):
                p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(str(folder), safe_serialization=True)
    assert json.loads((folder / "config.json").read_text())["model_type"] == "gpt2"
    return folder


@pytest.mark.parametrize(("activation", "tol"), [("gelu", 1e-4), ("gelu_new", 2e-3)])
def test_gpt2_folder_matches_transformers(tmp_path, activation, tol):
    from transformers import GPT2LMHeadModel

    folder = _write_gpt2_folder(tmp_path / "gpt2", activation)
    lm = privinfer.load(str(folder))
    assert isinstance(lm, LanguageModel)
    assert lm.kind == "gpt2" and lm.family is families.FAMILIES["gpt2"]
    ids = lm.prompt_ids("hello gpt-2", chat=False)
    assert len(ids) == len("hello gpt-2")  # one byte-level symbol per character
    ref = GPT2LMHeadModel.from_pretrained(str(folder), dtype=torch.float32).eval()
    with torch.inference_mode():
        want = ref(torch.tensor([ids])).logits[0]
    got = lm.logits(ids)
    assert want.std() > 0.05  # not vacuous
    assert (got - want).abs().max().item() <= tol
    out = lm.generate("hi", chat=False, max_new_tokens=3)
    assert out.token_ids == want_greedy(ref, lm.prompt_ids("hi", chat=False), 3, lm)


def want_greedy(ref, ids, n, lm):
    """transformers' greedy continuation, cut at the eos the way privinfer stops."""
    out = []
    with torch.inference_mode():
        for _ in range(n):
            t = int(ref(torch.tensor([ids + out])).logits[0, -1].argmax())
            if t in lm.tokenizer.eos_ids:
                break
            out.append(t)
    return out
