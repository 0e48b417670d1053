"""GGUF and Hugging Face folder loading on tiny models, and the errors for bad model files."""

from __future__ import annotations

import pytest
import torch

import privinfer
from privinfer.errors import ModelLoadError
from privinfer.models.tiny import tiny_llama_config, tiny_llama_weights, write_gguf, write_hf_folder


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    cfg = tiny_llama_config()
    w = tiny_llama_weights(cfg)
    d = tmp_path_factory.mktemp("tiny")
    return cfg, w, write_gguf(d / "tiny.gguf", cfg, w), write_hf_folder(d / "hf", cfg, w)


def _hf_logits(folder, ids):
    from transformers import LlamaForCausalLM

    ref = LlamaForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
    with torch.inference_mode():
        return ref(torch.tensor([ids])).logits[0]


def test_hf_folder_matches_transformers(tiny):
    _, _, _, folder = tiny
    lm = privinfer.load(str(folder))
    ids = lm.prompt_ids("hello tiny model")
    assert (lm.logits(ids) - _hf_logits(folder, ids)).abs().max().item() <= 1e-4


def test_gguf_roundtrip_matches_hf_folder(tiny):
    """Same weights via GGUF (q/k permuted the llama.cpp way) and via safetensors agree."""
    _, _, gguf_path, folder = tiny
    a, b = privinfer.load(str(gguf_path)), privinfer.load(str(folder))
    ids = a.prompt_ids("same answer either way")
    assert ids == b.prompt_ids("same answer either way")
    assert (a.logits(ids) - b.logits(ids)).abs().max().item() <= 1e-5


def test_q8_gguf_is_dequantized(tiny, tmp_path):
    cfg, w, _, _ = tiny
    lm = privinfer.load(str(write_gguf(tmp_path / "q8.gguf", cfg, w, quantize_q8=True)))
    emb = lm.weights["model.embed_tokens.weight"]
    assert emb.dtype == torch.float32
    assert (emb - w["model.embed_tokens.weight"]).abs().max().item() < 0.05  # Q8_0 step
    assert (emb - w["model.embed_tokens.weight"]).abs().max().item() > 0  # really quantized


def test_truncated_gguf(tiny, tmp_path):
    data = tiny[2].read_bytes()
    bad = tmp_path / "cut.gguf"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match="truncated"):
        privinfer.load(str(bad))


def test_not_a_gguf(tmp_path):
    bad = tmp_path / "x.gguf"
    bad.write_bytes(b"NOPE" + b"\0" * 100)
    with pytest.raises(ModelLoadError, match="not a GGUF"):
        privinfer.load(str(bad))


def test_missing_file(tmp_path):
    with pytest.raises(ModelLoadError, match="not found"):
        privinfer.load(str(tmp_path / "absent.gguf"))


def test_unsupported_architecture(tiny, tmp_path):
    cfg, w, _, _ = tiny
    path = write_gguf(tmp_path / "gpt2.gguf", cfg, w, arch="gpt2")
    with pytest.raises(ModelLoadError, match="unsupported architecture 'gpt2'"):
        privinfer.load(str(path))


def test_unsupported_quantization(tiny, tmp_path):
    import gguf
    import numpy as np

    from privinfer.models.families import read_gguf

    cfg, w, _, _ = tiny
    path = tmp_path / "iq.gguf"
    write_gguf(path, cfg, {k: v for k, v in w.items() if "layers.1" not in k})
    # rewrite with one tensor in a type privinfer does not dequantize
    wr = gguf.GGUFWriter(str(tmp_path / "iq2.gguf"), "llama")
    rd = gguf.GGUFReader(path)
    for f in rd.fields.values():
        if f.name.startswith("GGUF."):
            continue
        wr.add_key_value(
            f.name, f.contents(), f.types[0], sub_type=f.types[-1] if len(f.types) > 1 else None
        )
    blocks = np.zeros((64, 66), dtype=np.uint8)  # 64 rows of one 256-element IQ2_XXS block
    wr.add_tensor(
        "token_embd.weight", blocks, raw_shape=(64, 66), raw_dtype=gguf.GGMLQuantizationType.IQ2_XXS
    )
    wr.write_header_to_file()
    wr.write_kv_data_to_file()
    wr.write_tensors_to_file()
    wr.close()
    with pytest.raises(ModelLoadError, match="unsupported quantization type IQ2_XXS"):
        read_gguf(tmp_path / "iq2.gguf")


def test_unknown_model_name():
    with pytest.raises(ModelLoadError, match="unknown model 'no-such-model'"):
        privinfer.load("no-such-model")


def test_corrupt_safetensors(tiny, tmp_path):
    import shutil

    folder = tmp_path / "hf"
    shutil.copytree(tiny[3], folder)
    st = folder / "model.safetensors"
    st.write_bytes(st.read_bytes()[:1000])
    with pytest.raises(ModelLoadError, match="truncated or corrupt"):
        privinfer.load(str(folder))
