"""The mpc+he security parameters, per protocol, derived from the constants in use (for
`privinfer security --mode mpc+he` and docs/mpc-he.md). Semi-honest 2PC; no dealer."""

from __future__ import annotations

from typing import Any

from privinfer.twopc.iknp import KAPPA
from privinfer.twopc.linear import DEFAULT_BACKEND
from privinfer.twopc.ring import DEFAULT_FRAC_BITS, RING_BITS

AES_BITS = 128
X25519_BITS = 128  # Curve25519: ~2^128 group operations for discrete log / CDH


def parameters(frac_bits: int | None = None, linear: str = DEFAULT_BACKEND) -> dict[str, Any]:
    """Ring, precision and, per protocol, the computational and statistical security."""
    f = DEFAULT_FRAC_BITS if frac_bits is None else int(frac_bits)
    ot_bits = min(KAPPA, AES_BITS, X25519_BITS)
    exact = "none needed: exact (no statistical masking or failure probability)"
    rows = {
        "sharing (2-out-of-2 additive)": (
            f"peer's share from AES-{AES_BITS}-CTR under an X25519+HKDF key: {AES_BITS}-bit",
            "none needed: a uniform share reveals nothing",
        ),
        "base OT (Chou-Orlandi over X25519)": (f"CDH on Curve25519: {X25519_BITS}-bit", "none"),
        "OT extension (IKNP)": (
            f"kappa = {KAPPA} base OTs, fixed-key AES TCCR hash: {min(KAPPA, AES_BITS)}-bit",
            "none",
        ),
    }
    stat_bits: int | None = None
    stat_note = (
        "no protocol uses statistical masking: every mask is uniform in "
        f"Z_2^{RING_BITS} or {{0,1}} (the issue's >= 40 bits holds vacuously)"
    )
    if linear == "he":
        from privinfer.twopc import bfv
        from privinfer.twopc.he_linear import LIFT_BITS, STAT_BITS_PER_REPLY, WEIGHT_BITS

        total = sum(p.bit_length() for p in bfv.DATA_PRIMES) + bfv.SPECIAL_BITS
        replies = 2 ** (STAT_BITS_PER_REPLY - 40)
        rows["linear layers and the embedding (HeLinear: BFV coefficient encoding)"] = (
            f"RLWE, N = {bfv.N}, log2 q = {total} (HomomorphicEncryption.org table: 128-bit "
            f"at <= 218), t = 2^{bfv.T_BITS}; the lift to Z_2^64 by one OT ({ot_bits}-bit); "
            "the embedding is the client's one-hot rows times the owner's table",
            f"circuit privacy of each reply: re-randomised and noise-flooded, within 2^-"
            f"{STAT_BITS_PER_REPLY} of a reply computed without W (public weight bound |w| 2^f "
            f"< 2^{WEIGHT_BITS}); >= 40 bits over {replies:,} replies per session; exact while "
            f"|x W| < 2^{LIFT_BITS} (|y| < 2^{LIFT_BITS - 2 * f} at f = {f})",
        )
        stat_bits = 40
        stat_note = (
            f"the HE linear replies: 2^-{STAT_BITS_PER_REPLY} each, 2^-40 over {replies:,} "
            "replies (~40 SmolLM2 decode steps); every other mask is uniform (exact)"
        )
    else:
        rows["linear layers (OtLinear: Gilboa OT products of the owner's weights)"] = (
            f"that of the OTs: {ot_bits}-bit; one-time pad on the client's online message",
            exact,
        )
        rows["embedding lookup (1-out-of-vocab OT, lookup.py)"] = (
            f"that of the OTs and the TCCR hash: {ot_bits}-bit",
            exact,
        )
    rows |= {
        "attention cross terms (OT products of the two parties' shares)": (f"{ot_bits}-bit", exact),
        "millionaires / MSB / mux / B2A / AND and Beaver triples": (f"{ot_bits}-bit", exact),
        "truncation (wrap bit computed)": (f"{ot_bits}-bit", exact + "; result <= 1 ulp low"),
        "exp, reciprocal, rsqrt, SiLU, GELU, softmax, norms, argmax": (f"{ot_bits}-bit", exact),
    }
    return {
        "parties": "2: server (model owner, party 0) and client (party 1); no dealer",
        "adversary": "semi-honest, one party corrupted; a malicious party is not covered",
        "ring": f"Z_2^{RING_BITS}",
        "frac_bits": f,
        "linear_backend": linear,
        "computational_security_bits": ot_bits,
        "statistical_security_bits": stat_bits,
        "statistical_note": stat_note,
        "protocols": {k: {"computational": c, "statistical": s} for k, (c, s) in rows.items()},
        "transport": "mutually authenticated TLS 1.3 (net.tls), cluster CA identities",
    }
