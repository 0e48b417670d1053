import numpy as np
import pytest

from privinfer.errors import InputError
from privinfer.he import linear, packing


def _run(c, w, x, **kw):
    mat = linear.encode_matrix(c, w, c.params.top_level, **kw)
    c.add_rotation_steps(mat.rotation_steps())
    xp = np.pad(x, (0, mat.period - x.size))
    ct = c.encrypt(packing.replicated_vector(xp, mat.input_cover, c.params.slots))
    out = linear.matvec(c, mat, ct)
    return mat, out


@pytest.mark.parametrize("shape", [(16, 16), (24, 8), (8, 32), (12, 20), (6, 9)])
def test_matvec_matches_numpy(client8192, rng, shape):
    c = client8192
    w = rng.normal(size=shape) / np.sqrt(shape[1])
    x = rng.normal(size=shape[1])
    mat, out = _run(c, w, x)
    assert c.level(out) == c.params.top_level - 1
    assert out.scale == c.scale  # weights encoded at the dropped prime: scale kept
    y = c.decrypt(out)
    assert np.abs(y[: shape[0]] - w @ x).max() < 2e-3
    if mat.output_clean:
        assert np.abs(y[mat.out_cover :]).max() < 1e-3


def test_matvec_realistic_576(client8192, rng):
    c = client8192
    w = rng.normal(size=(576, 576)) / 24
    x = rng.normal(size=576)
    mat, out = _run(c, w, x)
    assert len(mat.rotation_steps()) <= 48  # BSGS: ~2 sqrt(576), not 575
    assert np.abs(c.decrypt(out)[:576] - w @ x).max() < 2e-3


def test_shared_baby_steps_and_replication(client8192, rng):
    c = client8192
    w1, w2 = rng.normal(size=(8, 8)) / 3, rng.normal(size=(8, 8)) / 3
    x = rng.normal(size=8)
    m1 = linear.encode_matrix(c, w1, c.params.top_level)
    m2 = linear.encode_matrix(c, w2, c.params.top_level)
    c.add_rotation_steps(m1.rotation_steps() | linear.replicate_steps(8, 8, 32, c.params.slots))
    ct = c.encrypt(packing.replicated_vector(x, 8, c.params.slots))
    ct = linear.replicate(c, ct, 8, 8, m1.input_cover)
    babies = linear.baby_steps(c, ct, m1.n1)
    y1 = c.decrypt(linear.matvec(c, m1, ct, babies))[:8]
    y2 = c.decrypt(linear.matvec(c, m2, ct, babies))[:8]
    assert np.abs(y1 - w1 @ x).max() < 1e-3 and np.abs(y2 - w2 @ x).max() < 1e-3


def test_window_sum(client8192, rng):
    c = client8192
    c.add_rotation_steps(linear.window_sum_steps(12))
    x = rng.normal(size=c.params.slots)
    y = c.decrypt(linear.window_sum(c, c.encrypt(x), 12))
    expect = np.array([x[j : j + 12].sum() for j in range(100)])
    assert np.abs(y[:100] - expect).max() < 5e-3


def test_packed_matmul_matches_numpy(client8192, rng):
    c = client8192
    tokens, n, m = 16, 600, 300  # 256 features per ciphertext: 3 in, 2 out, ragged edges
    x = rng.normal(size=(11, n))
    w = rng.normal(size=(m, n)) / np.sqrt(n)
    mat = linear.encode_packed_matrix(c, w, tokens, c.params.top_level)
    c.add_rotation_steps(mat.rotation_steps())
    cts = [c.encrypt(v) for v in packing.pack_tokens(x, c.params.slots, tokens)]
    outs = linear.packed_matmul(c, mat, cts)
    y = packing.unpack_tokens([c.decrypt(o) for o in outs], tokens, m, 11)
    assert np.abs(y - x @ w.T).max() < 5e-3


def test_matrix_too_large_for_one_ciphertext(client8192):
    with pytest.raises(InputError, match="does not fit"):
        linear.encode_matrix(client8192, np.ones((4000, 200)), 3)


def test_ffn_shapes_up_then_down_on_one_ciphertext(client8192, rng):
    c = client8192
    up, down = rng.normal(size=(1536, 384)) / 20, rng.normal(size=(384, 1536)) / 40
    x = rng.normal(size=384)
    plan = linear.encode_matrix(c, down, None)  # shapes only: what cover must h have?
    assert plan.fold == [768, 384]  # wide: 384 diagonals, then fold 4 partial sums
    m_up, h = _run(c, up, x, out_cover=plan.input_cover)  # up writes that cover directly
    assert m_up.output_clean and m_up.out_period == 1536
    m_down = linear.encode_matrix(c, down, c.level(h))
    c.add_rotation_steps(m_down.rotation_steps())
    y = c.decrypt(linear.matvec(c, m_down, h))[:384]
    assert np.abs(y - down @ (up @ x)).max() < 2e-3


@pytest.mark.parametrize("m, n", [(300, 600), (8, 8), (600, 300)])
def test_streamed_matmul_matches_numpy_and_shares_babies(client8192, rng, m, n):
    c = client8192
    tokens = 16  # 256 features per ciphertext: ragged edges, several blocks
    x = rng.normal(size=(11, n))
    c.add_rotation_steps(linear.streamed_steps((m, n), c.params.slots, tokens))
    cts = [c.encrypt(v) for v in packing.pack_tokens(x, c.params.slots, tokens)]
    n1 = linear.streamed_n1((m, n), c.params.slots, tokens)
    babies = linear.packed_babies(c, cts, tokens, n1)
    for _ in range(2):  # two matrices of one shape on the same baby steps
        w = rng.normal(size=(m, n)) / np.sqrt(n)
        outs = linear.streamed_matmul(c, w, cts, tokens, babies)
        assert c.params.top_level - c.level(outs[0]) == 1
        y = packing.unpack_tokens([c.decrypt(o) for o in outs], tokens, m, 11)
        assert np.abs(y - x @ w.T).max() < 5e-3
