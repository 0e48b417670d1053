import math

import numpy as np
import pytest

from privinfer.errors import InputError
from privinfer.he import poly


def _gelu(x):
    return 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))


@pytest.mark.parametrize(
    "approx, stated",
    [
        (poly.GELU, 6.7e-5),
        (poly.GELU_WIDE, 3.9e-3),
        (poly.SILU, 1.3e-5),
        (poly.SIGMOID, 2.8e-6),
        (poly.EXP, 4.4e-7),
        (poly.RELU, 9.7e-3),
    ],
)
def test_stated_float64_errors_hold(approx, stated):
    assert approx.max_abs_error <= stated * 1.05


@pytest.mark.parametrize(
    "fn, approx, reference",
    [
        (poly.gelu, poly.GELU, _gelu),
        (lambda c, x: poly.evaluate(c, x, poly.GELU_WIDE), poly.GELU_WIDE, _gelu),
        (poly.exp, poly.EXP, np.exp),
        (poly.sigmoid, poly.SIGMOID, lambda x: 1 / (1 + np.exp(-x))),
    ],
)
def test_encrypted_activation_matches_function(client16384, rng, fn, approx, reference):
    c = client16384
    x = rng.uniform(approx.lo, approx.hi, c.params.slots)
    out = fn(c, c.encrypt(x))
    used = c.params.top_level - c.level(out)
    assert used <= poly.chebyshev_depth(approx.degree, approx.lo, approx.hi)
    # CKKS at scale 2^30 adds ~1e-4 of the range's half-width (Paterson-Stockmeyer, measured)
    ckks = 1e-3 * max(1.0, (approx.hi - approx.lo) / 16)
    assert np.abs(c.decrypt(out) - reference(x)).max() < approx.max_abs_error + ckks


@pytest.mark.parametrize("bound, depth", [(1.0, 6), (2.0, 7)])
def test_relu_depth_and_error(client16384, rng, bound, depth):
    c = client16384
    x = rng.uniform(-bound, bound, c.params.slots)
    out = poly.relu(c, c.encrypt(x), bound=bound)
    assert c.params.top_level - c.level(out) == poly.chebyshev_depth(31, -bound, bound) == depth
    assert np.abs(c.decrypt(out) - np.maximum(x, 0)).max() < bound * 9.7e-3 + 1e-3


def test_inverse_and_inverse_sqrt(client16384, rng):
    c = client16384
    x = rng.uniform(1, 64, c.params.slots)
    ct = c.encrypt(x)
    inv = c.decrypt(poly.inverse(c, ct))
    assert np.abs(inv * x - 1).max() < 5e-3
    isq = c.decrypt(poly.inverse_sqrt(c, ct))
    assert np.abs(isq * np.sqrt(x) - 1).max() < 1e-3


def test_polynomial_needing_too_many_levels_is_refused(client8192):
    c = client8192
    with pytest.raises(InputError, match="levels"):
        poly.gelu(c, c.encrypt([0.5]))


def test_low_degree_fits_in_an_8192_window(client8192, rng):
    c = client8192
    approx = poly.fit_chebyshev("square", np.square, -1.0, 1.0, 2)
    x = rng.uniform(-1, 1, c.params.slots)
    out = poly.evaluate(c, c.encrypt(x), approx)
    assert c.params.top_level - c.level(out) == 2
    assert np.abs(c.decrypt(out) - x * x).max() < 1e-3


def test_chebyshev_divide_is_exact():
    from numpy.polynomial import chebyshev as cheb

    c = np.random.default_rng(0).normal(size=50)
    u = np.linspace(-1, 1, 101)
    q, r = poly.chebyshev_divide(c, 32)
    assert len(r) == 32
    got = cheb.chebval(u, q) * np.cos(32 * np.arccos(u)) + cheb.chebval(u, r)
    assert np.abs(got - cheb.chebval(u, c)).max() < 1e-12


def test_paterson_stockmeyer_uses_few_products(client16384, rng, monkeypatch):
    c = client16384
    approx = poly.fit_chebyshev("gelu", _gelu, -11.15, 7.35, 31)
    x = rng.uniform(approx.lo, approx.hi, c.params.slots)
    count = {"n": 0}
    real = c.multiply

    def counting(a, b):
        count["n"] += 1
        return real(a, b)

    monkeypatch.setattr(c, "multiply", counting)
    out = poly.evaluate(c, c.encrypt(x), approx)
    assert count["n"] <= 12  # power tree: 30
    assert c.params.top_level - c.level(out) <= poly.chebyshev_depth(31, approx.lo, approx.hi)
    assert np.abs(c.decrypt(out) - approx(x)).max() < 1e-3
