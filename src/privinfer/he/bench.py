"""Benchmarks of the CKKS linear layers (figures only, never timed tests; random public data).

Security assumption: none needed; keys are throw-away and the data is random.
"""

from __future__ import annotations

import statistics
import time

import numpy as np

from privinfer.he import linear, packing
from privinfer.he.ckks import PARAMS_8192, PARAMS_16384, CkksContext, CkksParams


def _params(n: int) -> CkksParams:
    return {8192: PARAMS_8192, 16384: PARAMS_16384}[n]


def bench_matvec(
    n: int = 576,
    N: int = 8192,  # noqa: N803
    repeats: int = 5,
    seed: int = 0,
    m: int | None = None,
) -> dict:
    """One m x n (default n x n) matvec on one ciphertext (BSGS, weights pre-encoded), one thread."""
    params = _params(N)
    rng = np.random.default_rng(seed)
    m = m or n
    w = rng.normal(size=(m, n)) / np.sqrt(n)
    x = rng.normal(size=n)
    ctx = CkksContext(params)
    t0 = time.perf_counter()
    mat = linear.encode_matrix(ctx, w, params.top_level)
    encode_s = time.perf_counter() - t0
    client = CkksContext.create_client(params, mat.rotation_steps())
    mat = linear.encode_matrix(client, w, params.top_level)
    ct = client.encrypt(packing.replicated_vector(x, mat.input_cover, params.slots))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = linear.matvec(client, mat, ct)
        times.append(time.perf_counter() - t0)
    err = float(np.abs(client.decrypt(out)[:m] - w @ x).max())
    return {
        "op": "matvec",
        "m": m,
        "n": n,
        "N": N,
        "rotations": len(mat.rotation_steps()),
        "plaintext_mults": len(mat.plaintexts),
        "median_s": statistics.median(times),
        "min_s": min(times),
        "encode_weights_s": encode_s,
        "max_abs_error": err,
    }


def bench_packed(
    vectors: int = 64,
    n: int = 576,
    N: int = 8192,
    repeats: int = 3,
    seed: int = 0,  # noqa: N803
) -> dict:
    """Y = X W^T for `vectors` packed vectors (token-minor blocks), one thread."""
    params = _params(N)
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(n, n)) / np.sqrt(n)
    x = rng.normal(size=(vectors, n))
    client = CkksContext.create_client(params)
    t0 = time.perf_counter()
    mat = linear.encode_packed_matrix(client, w, vectors, params.top_level)
    encode_s = time.perf_counter() - t0
    client.add_rotation_steps(mat.rotation_steps())
    cts = [client.encrypt(v) for v in packing.pack_tokens(x, params.slots, vectors)]
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        outs = linear.packed_matmul(client, mat, cts)
        times.append(time.perf_counter() - t0)
    y = packing.unpack_tokens([client.decrypt(o) for o in outs], vectors, n, vectors)
    med = statistics.median(times)
    return {
        "op": "packed_matmul",
        "vectors": vectors,
        "n": n,
        "N": N,
        "input_ciphertexts": len(cts),
        "plaintexts": len(mat.plaintexts),
        "median_s": med,
        "median_per_vector_s": med / vectors,
        "encode_weights_s": encode_s,
        "max_abs_error": float(np.abs(y - x @ w.T).max()),
    }
