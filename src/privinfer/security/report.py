"""`privinfer security`: the report for a mode's actual configuration, every figure derived from
the parameters in use (none typed in by hand), plus the threat matrix and a leakage list."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from privinfer.security.matrix import MATRIX, matrix_json, render_markdown

LEAKAGE: dict[str, list[str]] = {
    "plain": ["everything: prompt, output, weights and timing are in the clear"],
    "tee": [
        "prompt and output lengths (record sizes)",
        "number of generated tokens",
        "per-token timing",
        "which model is served (its measurement)",
        "hardware side channels are out of scope",
    ],
    "mpc": [
        "prompt length (number of input rows)",
        "number of generated tokens",
        "model shape (layers, hidden size, vocab) from message sizes",
        "per-token timing",
        "nothing else: every revealed value goes to the client only",
    ],
    "he": [
        "prompt length (number of ciphertext slots used)",
        "model shape",
        "number of refresh round trips",
        "per-layer timing",
        "the final output to the client (by design)",
    ],
}

SECTIONS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {}


def section(
    mode: str,
) -> Callable[[Callable[[argparse.Namespace], dict[str, Any]]], Callable[..., Any]]:
    def deco(fn: Callable[[argparse.Namespace], dict[str, Any]]) -> Callable[..., Any]:
        SECTIONS[mode] = fn
        return fn

    return deco


@section("plain")
def _plain(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "summary": "no protection: the reference engine, run by whoever holds the prompt and weights"
    }


@section("tee")
def _tee(args: argparse.Namespace) -> dict[str, Any]:
    from privinfer.tee.evidence import dcap, software
    from privinfer.tee.policy import Policy

    policy = Policy()
    return {
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
        ],
    }


def build_report(mode: str, args: argparse.Namespace) -> dict[str, Any]:
    fn = SECTIONS.get(mode)
    if fn is None:
        from privinfer.errors import InputError

        raise InputError(f"no security report for mode {mode!r} yet")
    return {
        "mode": mode,
        "parameters": fn(args),
        "leakage": LEAKAGE[mode],
        "threat_matrix": matrix_json(mode),
    }


def _print_value(key: str, value: Any, indent: int = 0) -> None:
    pad = "  " * indent
    if isinstance(value, dict):
        print(f"{pad}{key}:")
        for k, v in value.items():
            _print_value(k, v, indent + 1)
    elif isinstance(value, list):
        print(f"{pad}{key}:")
        for v in value:
            print(f"{pad}  - {v}")
    else:
        print(f"{pad}{key}: {value}")


def cmd_security(args: argparse.Namespace) -> int:
    report = build_report(args.mode, args)
    if args.json:
        print(json.dumps(report, indent=2, default=str))
        return 0
    print(f"privinfer security report: mode {args.mode}\n")
    for k, v in report["parameters"].items():
        _print_value(k, v)
    print("\nleaks by design:")
    for item in report["leakage"]:
        print(f"  - {item}")
    print("\nthreat matrix:\n")
    print(render_markdown(args.mode))
    return 0


def register(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    from privinfer.modes import KNOWN_MODES

    p = sub.add_parser("security", help="threat model and security report for a mode's parameters")
    p.add_argument("--mode", required=True, choices=KNOWN_MODES)
    common(p)
    p.set_defaults(func=cmd_security)


assert set(MATRIX) == set(LEAKAGE)
