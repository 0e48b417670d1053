"""The security report for a mode's actual configuration, every figure derived from
the parameters in use (none typed in by hand), plus the threat matrix and a leakage list."""

from __future__ import annotations

from typing import Any

from privinfer.security.matrix import matrix_json


def tee_parameters(platform: str = "software", same_user: bool = False) -> dict[str, Any]:
    """The tee mode's platform and isolation in use, evidence types, policy in force, channel,
    what the measurement covers and what is not appraised."""
    from privinfer.tee import launch
    from privinfer.tee.evidence import dcap, software
    from privinfer.tee.isolation import DEFAULT_ENCLAVE_USER, platform_kind
    from privinfer.tee.policy import Policy

    kind = platform_kind(platform)
    if kind.hardware:
        isolation = kind.isolation
    elif same_user:
        isolation = "NONE: host and enclave run as one OS user (--insecure-same-user)"
    else:
        isolation = f"{kind.isolation} (default user {DEFAULT_ENCLAVE_USER})"
    policy = Policy()
    return {
        "platform": platform,
        "host_isolation": isolation,
        "isolation_assumption": kind.assumption,
        "measured_launch": " ".join(launch.FLAGS)
        + " with environment "
        + ", ".join(f"{k}={v}" for k, v in launch.ENV.items())
        + "; code = privinfer sources + interpreter, standard library, .pth files, RECORD of "
        + ", ".join(launch.DISTRIBUTIONS),
        "sealing_policy": "MEASUREMENT (SIGNER only with the signer's signature over the identity)",
        "evidence_types": {
            "software platform (default here)": "ECDSA P-384 quotes from a platform root pinned by the client",
            "sgx / tdx": "Intel DCAP quotes (v3 / v4, v5), PCK chain to Intel's pinned root",
            "snp": "AMD SEV-SNP reports, VCEK -> ASK -> ARK",
            "nvidia": "H100 SPDM measurement reports, device chain to NVIDIA's pinned root",
        },
        "policy_in_force": policy.describe(),
        "policy_note": "default-deny: an empty measurement/signer allowlist admits nothing; the tee client "
        "fills it with the measurement it computes from its own copy of code, config and model",
        "not_appraised": {
            "software platform": list(software.NOT_CHECKED),
            "sgx/tdx": list(dcap.NOT_CHECKED),
        },
        "channel": "X25519 + HKDF-SHA256 over the handshake transcript -> AES-256-GCM per direction, "
        "counter nonces, AAD = session id + sequence + record type, explicit end record",
        "out_of_scope": [
            "microarchitectural side channels (cache, branch, power, page-fault)",
            "denial of service by the host",
            "root on the software platform's machine",
            "operating-system libraries (/lib, /usr/lib) and the kernel (not measured)",
        ],
    }


def mpc_parameters(
    model: Any, model_name: str, prompt: str, frac_bits: int | None
) -> dict[str, Any]:
    """The mpc mode's ring, truncation and per-op failure bounds, from op counts on `model`."""
    import inspect
    import math

    from privinfer.mpc.protocols import norms
    from privinfer.mpc.protocols import trunc as trunc_mod
    from privinfer.mpc.runtime import Party
    from privinfer.security.opcount import NORM_INPUT, count_generation

    f = int(frac_bits or inspect.signature(Party.__init__).parameters["frac_bits"].default)
    lm = model
    ids = lm.prompt_ids(prompt)
    prefill, decode = count_generation(lm, ids)
    per_op: dict[str, Any] = {}
    aby3_token = 0.0
    for op, t in decode.by_op.items():
        pre = prefill.by_op.get(op)
        max_abs = max(t.max_abs, pre.max_abs if pre else 0.0)
        if op == NORM_INPUT:
            # RMSNorm/LayerNorm prescale x by 2^-k, then need sum x^2 * 2^(2(f-k)) < 2^60 per row.
            k = norms.prescale_bits(f, lm.cfg.hidden_size, norms.DEFAULT_MAX_ABS)
            bound = 2.0 ** (60 - 2 * (f - k))
            per_op[op] = {
                "elements_per_token": t.elements,
                "max_row_sum_of_squares_seen": round(max_abs, 1),
                "prescale_bits": k,
                "bound": bound,
                "headroom_bits": round(math.log2(bound / max(max_abs, 1e-30)), 2),
                "failure_probability_per_token": 0.0 if max_abs < bound else 1.0,
            }
            continue
        # a value at 2f fractional bits before truncation needs this many bits (sign excluded)
        bound_bits = max(1, math.ceil(math.log2(max_abs + 1e-30))) + 2 * f
        p = trunc_mod.trunc_failure_probability(bound_bits, f)
        aby3 = trunc_mod.aby3_local_trunc_failure_probability(bound_bits)
        aby3_token += aby3 * t.elements
        per_op[op] = {
            "truncated_elements_per_token": t.elements,
            "max_abs_seen": round(max_abs, 4),
            "bound_bits_at_2f": bound_bits,
            "headroom_bits": trunc_mod.HEADROOM_BITS - bound_bits,
            "failure_probability_per_element": p,
            "failure_probability_per_token": p * t.elements,
        }
    return {
        "adversary": "3 compute parties, honest majority, semi-honest (passive); the client and the model "
        "owner provide inputs and only the client receives outputs",
        "ring": "Z_2^64, replicated secret sharing (each party holds 2 of 3 additive shares)",
        "fraction_bits": f,
        "prf": "AES in counter mode (cryptography package), pairwise keys agreed fresh per session",
        "truncation": (trunc_mod.__doc__ or "").strip().splitlines()[0],
        "truncation_exact_while": f"|x| < 2^{trunc_mod.HEADROOM_BITS} - 2^{f} as ring integers, i.e. "
        f"|value| < 2^{trunc_mod.HEADROOM_BITS - 2 * f} before a product is truncated",
        "model": model_name,
        "prompt_tokens_measured": len(ids),
        "per_op_class": per_op,
        "failure_probability_per_generated_token": sum(
            v.get("failure_probability_per_token", 0.0) for v in per_op.values()
        ),
        "for_comparison_aby3_local_truncation_per_token": aby3_token,
        "what_each_party_learns": "nothing about prompt, weights, logits or tokens beyond their shapes, the "
        "prompt length and the number of generated tokens (a public stop bit)",
        "what_the_client_learns": "the generated token ids only (never logits or weights)",
    }


def he_parameters() -> dict[str, Any]:
    """The he mode's CKKS parameters, security level from the standard table, refresh masking,
    and the circuit privacy of delivered outputs (`he.privacy.figures`)."""
    import math

    from privinfer.he import params as he_params
    from privinfer.he import privacy, refresh

    p = he_params.PARAMS_16384
    n, total = p.poly_modulus_degree, sum(p.coeff_modulus_bits)
    p.check_security()
    level = max(b for b, table in HE_STANDARD.items() if total <= table.get(n, 0))
    sigma, value_bits = refresh.DEFAULT_SIGMA, 8
    return {
        "scheme": "CKKS (RLWE) via TenSEAL/SEAL, client holds the secret key; semi-honest server",
        "poly_modulus_degree": n,
        "slots": p.slots,
        "coeff_modulus_bits": list(p.coeff_modulus_bits),
        "total_modulus_bits": total,
        "max_total_bits_at_128": he_params.MAX_COEFF_BITS_128[n],
        "security_level_bits": level,
        "security_table": "HomomorphicEncryption.org standard, ternary secret, classical attacks",
        "scale_bits": p.scale_bits,
        "levels_between_refreshes": p.top_level - p.floor_level,
        "refresh": {
            "statistical_security_bits": sigma,
            "mask_bits": value_bits + sigma + math.ceil(math.log2(n)),
            "note": "server re-randomises with a fresh encryption of zero and adds a uniform mask "
            "polynomial much wider than the data (noise flooding); the client decrypts only "
            "masked values and re-encrypts at the top level; one round trip per refresh",
        },
        "circuit_privacy": privacy.figures(p),
        "refuses_below_128_bits": True,
    }


# HomomorphicEncryption.org security standard, max total coeff modulus bits (ternary secret).
HE_STANDARD: dict[int, dict[int, int]] = {
    128: {1024: 27, 2048: 54, 4096: 109, 8192: 218, 16384: 438, 32768: 881},
    192: {1024: 19, 2048: 37, 4096: 75, 8192: 152, 16384: 305, 32768: 611},
    256: {1024: 14, 2048: 29, 4096: 58, 8192: 118, 16384: 237, 32768: 476},
}


def threat_rows(mode: Any, **params: Any) -> dict[str, Any]:
    """A mode's threat rows for these parameters (`threat_rows(**params)` where the mode derives
    them from its configuration, as tee does from its platform), else its fixed `threat`."""
    rows = getattr(mode, "threat_rows", None)
    return rows(**params) if callable(rows) else mode.threat


def build_report(mode: Any, model: Any | None = None, **params: Any) -> dict[str, Any]:
    """The report for a mode plug-in (`privinfer.modes.get(name)`): parameters, leakage, matrix."""
    return {
        "mode": mode.name,
        "parameters": mode.security(model, **params),
        "leakage": list(mode.leakage),
        "threat_matrix": matrix_json(threat_rows(mode, **params)),
    }
