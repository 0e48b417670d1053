import numpy as np
import pytest

from privinfer.errors import InputError
from privinfer.he import packing


def test_replicated_vector_layout():
    v = packing.replicated_vector(np.arange(3.0), 7, 16)
    assert v.tolist() == [0, 1, 2, 0, 1, 2, 0] + [0] * 9
    with pytest.raises(InputError):
        packing.replicated_vector(np.arange(3.0), 17, 16)


def test_matvec_diagonal_reproduces_matvec(rng):
    w = rng.normal(size=(5, 3))
    x = rng.normal(size=3)
    j = np.arange(5)
    y = sum(packing.matvec_diagonal(w, i, 5) * x[(j + i) % 3] for i in range(3))
    assert np.allclose(y, w @ x)


def test_pack_unpack_tokens_round_trip(rng):
    x = rng.normal(size=(5, 20))
    vecs = packing.pack_tokens(x, 64, 8)
    assert len(vecs) == 3  # B = 64 / 8 = 8 features per vector
    assert vecs[0][1 * 8 + 2] == x[2, 1]  # slot f*T + t
    assert np.array_equal(packing.unpack_tokens(vecs, 8, 20, 5), x)


def test_token_count_must_be_power_of_two():
    with pytest.raises(InputError, match="power of two"):
        packing.token_blocks(64, 6)


def test_block_diagonal_matches_definition(rng):
    w = rng.normal(size=(6, 6))
    d = packing.block_diagonal(w, 0, 0, 1, 4, 2)
    assert d[0] == w[0, 1] and d[1] == w[0, 1] and d[6] == w[3, 0]
