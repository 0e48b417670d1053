"""Circuit privacy of what the server hands the client for its final use (outputs, logits and
the range-check total): re-randomisation plus Gaussian noise flooding, and its figures.

Security assumption: semi-honest client holding the secret key. Without this step the client
decrypts ciphertexts whose c1 and noise are functions of the server's weights and circuit, not
only of the output values: a client that knows the noise of what it encrypted (it does, for
every upload and every refresh answer) reads a secret per-slot weight off an output whose
values are all zero (tests/he/test_privacy.py). `sanitize` does, per delivered ciphertext:

1. mod-switch outputs to the lowest level whose modulus holds the message, the flood and a
   margin (`delivery_level`; level 0 at the default parameters: 1/7.6 of the top-level
   bytes); the range-check total keeps its level;
2. add a fresh public-key encryption of zero: c1 becomes a fresh RLWE sample (computationally
   independent of the circuit), the noise gains SEAL's fresh encryption noise (~30 rms);
3. add an integer polynomial G, coefficients round(sigma * N(0, 1)) from the OS CSPRNG.

What the flood buys, exactly. Two servers (weights W, W') whose delivered ciphertexts hold the
same message and circuit noises e_i, e'_i give the client views whose statistical distance is
at most sqrt(sum_i ||e_i - e'_i||^2) / (2 sigma) (Pinsker on the Gaussians' KL divergence
sum_i ||e_i - e'_i||^2 / (2 sigma^2)), i.e. <= sqrt(C) max_i ||e_i - e'_i|| / (2 sigma) for C
ciphertexts. Every CKKS rescale leaves a rounding noise tau0 + tau1 s (tau uniform on
[-1/2, 1/2], s ternary): rms sqrt((1 + 2N/3) / 12) per coefficient (30.2 at N = 16384), so a
noise difference has norm >= sqrt(2N) times that (5,460). 40 bits per session would need
sigma >= 2^39 sqrt(C) 5,460, which adds a per-slot error of sigma sqrt(N/2) / Delta: 2^28 at
Delta = 2^30 for one ciphertext. No output survives that: statistical circuit privacy at 40
bits is out of reach at these parameters (it would need a scale of ~2^73 through the whole
circuit, `figures`). The default flood is sized to the outputs' precision instead (`FLOOD_SLOT_STD`):
it hides noise differences far below sigma and does NOT give a negligible statistical
distance; `figures` states the resulting bound with the numbers.
"""

from __future__ import annotations

import math
from typing import Any

from privinfer.he.ckks import Ciphertext, CkksContext
from privinfer.he.packing import token_blocks
from privinfer.he.params import CkksParams
from privinfer.he.refresh import gaussian_poly

# Std of the error the flood adds to each delivered slot value (outputs, logits, check):
# MiniLM's ||HE - plain|| is 1.3e-3 without it, the test bound 2e-3; 384 outputs at 3.1e-5
# each add 6e-4 in quadrature.
FLOOD_SLOT_STD = 2.0**-15
STATISTICAL_TARGET_BITS = 40
TAIL = 9.0  # |round(sigma g)| <= 9 sigma (`refresh.gaussian_poly`: |g| <= 8.6)
# Public shapes of the two models the figures are stated for (their configs).
MINILM_HIDDEN, MINILM_TOKENS = 384, 16
SMOLLM2_VOCAB, SMOLLM2_CONTEXTS = 49152, (16, 64)


def flood_sigma(params: CkksParams, slot_std: float = FLOOD_SLOT_STD) -> float:
    """Coefficient std giving `slot_std` per slot: a slot is sum_k g_k zeta^k / Delta, whose
    real part has variance sigma^2 N / 2 / Delta^2."""
    return slot_std * 2.0**params.scale_bits / math.sqrt(params.poly_modulus_degree / 2)


def slot_std(params: CkksParams, sigma: float) -> float:
    return sigma * math.sqrt(params.poly_modulus_degree / 2) / 2.0**params.scale_bits


def rounding_rms(params: CkksParams) -> float:
    """rms per coefficient of one rescale's rounding noise tau0 + tau1 s (SEAL's ternary s)."""
    return math.sqrt((1 + 2 * params.poly_modulus_degree / 3) / 12)


def delivery_level(ctx: CkksContext, ct: Ciphertext, sigma: float, value_bound: float) -> int:
    """Lowest level whose modulus holds 2^b (b: message coefficient bound, as `Refresher.value_
    bits`) plus the flood's tail, with 2 bits to spare; never above ct's level."""
    need = math.ceil(math.log2(ct.scale)) + math.ceil(math.log2(max(value_bound, 1.0))) + 1
    need = max(need, math.ceil(math.log2(max(TAIL * sigma, 1.0)))) + 2
    for level in range(ctx.level(ct) + 1):
        if ctx.modulus_bits(level) >= need:
            return level
    return ctx.level(ct)


def sanitize(
    ctx: CkksContext, ct: Ciphertext, sigma: float, value_bound: float, lower: bool = True
) -> Ciphertext:
    """Steps 1-3 of the module docstring on one ciphertext; `lower=False` keeps its level (the
    range-check total: an out-of-range blow-up must not wrap modulo a smaller q and pass)."""
    if lower:
        ct = ctx.mod_switch_to(ct, delivery_level(ctx, ct, sigma, value_bound))
    flood = gaussian_poly(sigma, ctx.params.poly_modulus_degree) if sigma > 0 else None
    return ctx.rerandomize(ct, flood)


def delivered(cols: int, tokens: int, slots: int) -> int:
    """Ciphertexts one delivery sends: ceil(cols / B) outputs plus the range-check total."""
    return -(-cols // token_blocks(slots, tokens)) + 1


def distance_bound(noise_norm: float, count: int, sigma: float) -> float:
    """Statistical distance bound sqrt(count) * noise_norm / (2 sigma) (module docstring)."""
    return math.sqrt(count) * noise_norm / (2.0 * sigma)


def bits(distance: float) -> float:
    """-log2 of a distance bound; 0 when the bound is >= 1 (it says nothing)."""
    return max(0.0, -math.log2(distance)) if distance > 0 else math.inf


def figures(params: CkksParams, slot: float = FLOOD_SLOT_STD) -> dict[str, Any]:
    """The flood's size, its cost in precision, the ciphertext counts and the security bound,
    all from the parameters and the constants above."""
    n, slots = params.poly_modulus_degree, params.slots
    sigma = flood_sigma(params, slot)
    floor = math.sqrt(2 * n) * rounding_rms(params)  # ||e - e'|| of two rescale roundings
    counts = {"minilm_sentence": delivered(MINILM_HIDDEN, MINILM_TOKENS, slots)}
    for t in SMOLLM2_CONTEXTS:
        counts[f"smollm2_token_context_{t}"] = delivered(SMOLLM2_VOCAB, t, slots)
    need = {}
    for what, c in counts.items():
        s40 = 2.0 ** (STATISTICAL_TARGET_BITS - 1) * math.sqrt(c) * floor
        need[what] = {
            "sigma_log2": round(math.log2(s40), 1),
            "slot_error_std": slot_std(params, s40),
        }
    per_ct = distance_bound(floor, 1, sigma)
    return {
        "rerandomised": "every delivered ciphertext gets a fresh public-key encryption of zero: "
        "c1 is a fresh RLWE sample (computational, not statistical)",
        "flood": "Gaussian, coefficients round(sigma N(0,1)) from the OS CSPRNG, added to c0",
        "flood_sigma": round(sigma, 1),
        "flood_slot_error_std": slot,
        "delivered_ciphertexts": counts,
        "rescale_rounding_rms": round(rounding_rms(params), 1),
        "noise_difference_floor": round(floor, 1),
        "distance_bound": "sqrt(C) ||e - e'|| / (2 sigma) for C ciphertexts with noises e, e'",
        "distance_at_floor_one_ciphertext": round(per_ct, 2),
        "statistical_security_bits_per_ciphertext": round(bits(per_ct), 1),
        "statistical_security_bits_per_minilm_sentence": round(
            bits(distance_bound(floor, counts["minilm_sentence"], sigma)), 1
        ),
        "sigma_for_40_bits_per_session": need,
        "scale_bits_for_40_bits_at_this_error": round(
            params.scale_bits + math.log2(need["minilm_sentence"]["slot_error_std"] / slot), 1
        ),
        "verdict": "no statistical circuit privacy: the flood that outputs tolerate is below the "
        "noise difference of a single rescale, and 40 bits would add errors of "
        f"~2^{math.log2(need['minilm_sentence']['slot_error_std']):.0f} per slot; what holds is "
        "a fresh c1 and noise differences well under sigma smudged",
    }
