"""RNS integer polynomials: exact products, uniform masks, centred lifts, window checks."""

import numpy as np
import pytest

from privinfer.errors import InputError
from privinfer.he import rns

PRIMES = [
    1125899906826241,
    281474976546817,
    1073692673,
    1152921504606830593,
]  # coprime, 50/48/30/60 bits


@pytest.mark.parametrize("q", PRIMES)
def test_mulmod_matches_python_integers(q, rng):
    a = rng.integers(0, 2**63, 4000, dtype=np.uint64)
    a[:4] = [0, 1, 2**64 - 1, q - 1]
    for b in (0, 1, q - 1, int(rng.integers(0, q))):
        want = [(int(x) * b) % q for x in a]
        assert rns.mulmod(a, b, q).tolist() == want


def test_mulmod_refuses_wide_primes_and_unreduced_constants():
    with pytest.raises(InputError):
        rns.mulmod(np.ones(2, np.uint64), 1, (1 << 61) + 1)
    with pytest.raises(InputError):
        rns.mulmod(np.ones(2, np.uint64), 7, 7)


def test_uniform_mask_residues_are_one_integer_in_range():
    bits, n = 94, 4096
    res = rns.uniform_rns(bits, n, PRIMES)
    vals = rns.CentredLift(res, PRIMES).to_objects()
    assert all(-(1 << bits) <= v < 1 << bits for v in vals)
    assert max(abs(v) for v in vals).bit_length() == bits  # spread over the whole range
    assert sum(v < 0 for v in vals) in range(n // 2 - 200, n // 2 + 200)
    for j, q in enumerate(PRIMES):  # every residue row agrees with the one integer
        assert [v % q for v in vals] == res[j].tolist()


def test_centred_lift_and_residues_at_other_primes(rng):
    small, other = PRIMES[:2], PRIMES[2:]
    big_q = small[0] * small[1]
    vals = [int(v) for v in rng.integers(-(2**62), 2**62, 1000)] + [
        big_q // 2,
        -(big_q // 2),
        0,
        1,
        -1,
        (1 << 94) - 5,
        -(1 << 94) + 5,
    ]
    res = rns.from_objects(np.array(vals, dtype=object), small)
    lift = rns.CentredLift(res, small)
    assert lift.to_objects().tolist() == vals
    assert lift.residues(other).tolist() == [[v % p for v in vals] for p in other]
    assert lift.residues(small).tolist() == res.tolist()


def test_magnitude_check_is_exact_at_the_bound():
    small = PRIMES[:2]
    w = (1 << 94) - (1 << 40)
    for vals, over in (([w - 1, -(w - 1), 0], False), ([0, w], True), ([-w, 3], True)):
        lift = rns.CentredLift(rns.from_objects(np.array(vals, dtype=object), small), small)
        assert lift.magnitude_at_least(w) is over


def test_negate_and_int64_residues(rng):
    c = rng.integers(-(2**40), 2**40, 256)
    res = rns.from_int64(c, PRIMES)
    back = rns.CentredLift(rns.negate(res, PRIMES), PRIMES).to_objects()
    assert back.tolist() == [-int(v) for v in c]
