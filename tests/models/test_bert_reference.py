"""The plain engine's MiniLM against sentence-transformers."""

from __future__ import annotations

import pytest
import torch

TEXTS = [
    "The cat sits on the mat.",
    "A feline rests on a rug.",
    "Stock markets fell sharply after the announcement.",
    "Private inference keeps the prompt secret from the server.",
]


@pytest.fixture(scope="module")
def st_model(minilm):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(minilm.source), device="cpu")


def test_embeddings_match_sentence_transformers(minilm, st_model):
    ours = minilm.embed(TEXTS)
    ref = st_model.encode(TEXTS, convert_to_tensor=True)
    cos = torch.nn.functional.cosine_similarity(ours, ref, dim=-1)
    assert ours.shape == (len(TEXTS), 384)
    assert cos.min().item() >= 0.9999
    assert torch.allclose(ours.norm(dim=-1), torch.ones(len(TEXTS)), atol=1e-5)


def test_similarity_ranking(minilm):
    e = minilm.embed(TEXTS[:3])
    assert float(e[0] @ e[1]) > float(e[0] @ e[2])


def test_too_long_text_is_refused(minilm):
    from privinfer.errors import InputError

    with pytest.raises(InputError, match="more than the model's limit"):
        minilm.embed("word " * 400)


def test_empty_text_is_refused(minilm):
    from privinfer.errors import InputError

    with pytest.raises(InputError, match="empty"):
        minilm.embed(["   "])
