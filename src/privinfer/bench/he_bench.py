"""HE benchmarks: CKKS linear layers, MiniLM end to end, one SmolLM2 layer (figures only).

Security assumption: none needed; keys are throw-away and inputs are public sentences or random.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import time
from typing import Any

import numpy as np
import torch

import privinfer
from privinfer.he import linear, packing
from privinfer.he.calibrate import SENTENCES, calibrate_decoder
from privinfer.he.ckks import PARAMS_8192, PARAMS_16384, CkksContext, CkksParams
from privinfer.he.client import embed_remote
from privinfer.he.ops import HeOps, HeTensor
from privinfer.he.ranges import HeRanges, minilm_ranges
from privinfer.he.session import HeClient, LocalKeyHolder
from privinfer.models.llama import Llama


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


def _sentence_of(model, tokens: int) -> list[int]:
    """Token ids (with [CLS]/[SEP]) of a public sentence cut or extended to `tokens` ids."""
    words = " ".join(SENTENCES).split()
    ids: list[int] = []
    for n in range(1, len(words) + 1):
        ids = model.token_ids(" ".join(words[:n]))
        if len(ids) >= tokens:
            break
    return ids[: tokens - 1] + ids[-1:]


class _BothWays(HeOps):
    """Delivers each output twice in one run, without then with circuit privacy (the same
    ciphertexts and range checks): what flooding costs in time, bytes and error."""

    deliveries: list[dict]

    def _deliver(self, x, kind):
        self.deliveries = getattr(self, "deliveries", [])
        terms, overflow = list(self.checks.terms), self.checks.overflow_checks
        out = None
        for flag in (False, True):
            self.checks.terms, self.checks.overflow_checks = list(terms), overflow
            self.circuit_privacy = flag
            sent = self.refresher.stats.bytes_to_client
            t0 = time.perf_counter()
            out = super()._deliver(x, kind)
            self.deliveries.append(
                {
                    "circuit_privacy": flag,
                    "ciphertexts": len(x.cts) + (1 if terms else 0),
                    "levels": sorted({self.ctx.level(c) for c in x.cts}),
                    "deliver_s": round(time.perf_counter() - t0, 4),
                    "bytes_to_client": self.refresher.stats.bytes_to_client - sent,
                    "output": out.clone() if torch.is_tensor(out) else out,
                }
            )
        return out


def bench_deliver(
    count: int,
    level: int,
    repeats: int = 3,
    N: int = 16384,  # noqa: N803
) -> dict:
    """`count` output ciphertexts at `level` (+ a range-check total) delivered to an in-process
    client without and with circuit privacy: median time (server + client) and bytes."""
    params = _params(N)
    ops = HeOps(params, keyholder=LocalKeyHolder(HeClient.create(params)))
    ct = ops.ctx.mod_switch_to(ops.ctx.encrypt(np.full(params.slots, 0.5)), level)
    check = ops.ctx.mod_switch_to(ops.ctx.encrypt(np.zeros(params.slots)), level)
    x = HeTensor([ct] * count, 16, params.slots // 16 * count, 16)
    out: dict = {"ciphertexts": count + 1, "level": level, "N": N}
    for flag in (False, True):
        ops.circuit_privacy = flag
        times, sent = [], 0
        for _ in range(repeats):
            ops.checks.terms, ops.checks.overflow_checks = [check], 0
            before = ops.refresher.stats.bytes_to_client
            t0 = time.perf_counter()
            ops._deliver(x, "reveal")
            times.append(time.perf_counter() - t0)
            sent = ops.refresher.stats.bytes_to_client - before
        key = "flooded" if flag else "raw"
        out[key] = {"median_s": round(statistics.median(times), 4), "bytes": sent}
    return out


def bench_minilm(tokens: int = 16, two_process: bool = False) -> dict:
    """MiniLM-L6 end to end under CKKS for one `tokens`-token input: time, rounds, bytes, cos;
    in-process, the output is delivered twice (`_BothWays`): without and with circuit privacy."""
    model = privinfer.load("minilm-l6")
    ids = _sentence_of(model, tokens)
    plain = model.plain().ops.reveal(model.plain().encode(ids))
    t0 = time.perf_counter()
    if two_process:
        got, stats = embed_remote(model, [ids], None)
        keys_s = 0.0
    else:
        ops = _BothWays(ranges=minilm_ranges())
        keys_s = time.perf_counter() - t0
        got = ops.reveal(model.build(ops).encode(ids))
        s = ops.refresher.stats
        deliveries = []
        for d in ops.deliveries:
            d = dict(d)
            d["error_vs_plain"] = float((d.pop("output") - plain).norm())
            deliveries.append(d)
        stats = {
            "deliveries": deliveries,
            "rounds": s.rounds,
            "bytes_to_server": s.bytes_to_server + ops.key_bytes,
            # the session as run with circuit privacy (the raw extra deliveries left out)
            "bytes_to_client": s.bytes_to_client
            - sum(d["bytes_to_client"] for d in deliveries if not d["circuit_privacy"]),
            "galois_key_bytes": ops.key_bytes,
            "by_op_s": {k: round(v["wall_s"], 2) for k, v in ops.costs().to_dict().items()},
        }
    return {
        "bench": "minilm",
        "tokens": len(ids),
        "two_process": two_process,
        "total_s": round(time.perf_counter() - t0, 2),
        "keygen_s": round(keys_s, 2),
        "cosine_to_plain": float(torch.nn.functional.cosine_similarity(got, plain)),
        **stats,
    }


def _enclave_in_host(net: Any, i: int, folder: Any) -> list[str]:
    """Start `privinfer tee+he enclave` in host i (state in `folder`, shared with the server);
    returns the server's flags that reach it."""
    import sys

    host, port = net.listen[i].rsplit(":", 1)
    ready = folder / "enclave-ready"
    folder.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "privinfer.cli", "tee+he", "enclave", "--dir", str(folder)]
    proc = net.popen(i, [*cmd, "--host", host, "--port", port, "--ready-file", str(ready)])
    deadline = time.monotonic() + 300
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the refresh enclave did not start in its namespace")
        time.sleep(0.2)
    return ["--enclave-url", net.hosts[i], "--enclave-certs", str(folder / "enclave-certs")]


CLI_SENTENCE = "A man is playing a guitar on the stage tonight while people dance."  # 16 ids


def bench_minilm_cli(
    text: str = CLI_SENTENCE, net: Any = None, timeout_s: float = 3600.0, mode: str = "he"
) -> dict:
    """MiniLM-L6 under CKKS through the command a user runs: `privinfer embed --mode he
    --model minilm-l6 --threads 1 --json TEXT` in a subprocess, which starts its own local
    server (`net` None: loopback), or, given an `emulated_pair` setup, the server
    (`privinfer he serve`) in host 1 and the same client command in host 0, over the emulated
    link. Reports the command's own `embed_s`, its HE figures, the wall time of the whole
    command, and the CPU seconds of every process it ran (client, server, user + system).
    `mode="tee+he"` runs `privinfer embed --mode tee+he` (server `privinfer tee+he serve` with
    its refresh enclave on the server's host; the figures are then the client's own traffic)."""
    import resource
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    from privinfer.he.transport import ensure_identities

    def children_cpu() -> float:
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        return ru.ru_utime + ru.ru_stime

    client = [sys.executable, "-m", "privinfer.cli", "embed", "--mode", mode]
    client += ["--model", "minilm-l6", "--threads", "1", "--json"]
    cpu0, t0 = children_cpu(), time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="pvi-he-bench-") as tmp:
        if net is None:
            done = subprocess.run(
                [*client, text], capture_output=True, text=True, timeout=timeout_s, check=False
            )
            out, err, code = done.stdout, done.stderr, done.returncode
        else:
            host, port = net.listen[1].rsplit(":", 1)
            certs = Path(tmp) / "certs"
            ready = Path(tmp) / "ready"
            if mode == "he":
                ensure_identities(certs, int(port))
                serve = [sys.executable, "-m", "privinfer.cli", "he", "serve", "--model"]
                serve += ["minilm-l6", "--certs", str(certs), "--sessions", "1"]
                env = {**os.environ, "PRIVINFER_HE_CERTS": str(certs)}
                remote = ["--server", net.hosts[1]]
            else:
                serve = [sys.executable, "-m", "privinfer.cli", "tee+he", "serve", "--model"]
                serve += ["minilm-l6", "--dir", str(Path(tmp) / "srv")]
                if net.n_hosts > 2:  # the refresh enclave in host 2, behind its own link
                    serve += _enclave_in_host(net, 2, Path(tmp) / "srv")
                env = dict(os.environ)
                remote = ["--server", net.hosts[1], "--teehe-dir", str(Path(tmp) / "srv")]
            serve += ["--host", host, "--port", port, "--threads", "1"]
            server = net.popen(1, [*serve, "--ready-file", str(ready)])
            deadline = time.monotonic() + 300
            while not ready.exists():
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the HE server did not start in its namespace")
                time.sleep(0.2)
            proc = net.popen(
                0,
                [*client, *remote, text],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            out, err = proc.communicate(timeout=timeout_s)
            code = proc.returncode
            if mode != "he":
                server.terminate()
            server.wait(timeout=60)
    if code != 0:
        raise RuntimeError(f"privinfer embed --mode {mode} failed: {err.strip()[-500:]}")
    got = json.loads(out)
    he = got[mode]
    return {
        "bench": "minilm-cli",
        "command": " ".join([*client[1:], repr(text)]),
        "net": "loopback" if net is None else net.measured.get("profile", net.profile.name),
        "embed_s": got["embed_s"],
        "command_wall_s": round(time.perf_counter() - t0, 2),
        "cpu_s_all_processes": round(children_cpu() - cpu0, 1),
        "rounds": he["rounds"],
        "bytes_to_server": he["bytes_to_server"],
        "bytes_to_client": he["bytes_to_client"],
        "cosine_to_plain": min(he["cosine_to_plain"]),
        "peak_rss_mb_client": got.get("peak_rss_mb"),
        "client_round_trips": he.get("client_round_trips"),
        "enclave": he.get("enclave"),
        "client_input_bytes": he.get("input_bytes"),
        "client_output_bytes": he.get("output_bytes"),
    }


def bench_smollm2(context_tokens: int = 8, prompt: str = "The capital of France is") -> dict:
    """One SmolLM2-135M decoder layer under CKKS, extrapolated to 30 layers (stated so).

    Measures a prefill and one decode step of layer 0 with the LM head cut to one ciphertext
    block of 8192 / context_tokens rows, then scales: per token = 30 x layer + blocks x head.
    """
    lm = privinfer.load("smollm2-135m")
    cfg = lm.cfg
    ids = lm.tokenizer.encode(prompt)[: context_tokens - 1]
    rec = calibrate_decoder(lm, [lm.tokenizer.encode(s) for s in SENTENCES[:4]], new_tokens=2)
    block = PARAMS_16384.slots // context_tokens
    w = dict(lm.weights)
    w["lm_head.weight"] = w["model.embed_tokens.weight"][:block]
    one = dataclasses.replace(cfg, n_layers=1, tie_embeddings=False)
    client = HeClient.create(PARAMS_16384, max_new_tokens=2)
    ops = HeOps(
        keyholder=LocalKeyHolder(client),
        ranges=HeRanges.from_calibration(rec),
        context_tokens=context_tokens,
    )
    model = Llama(one, w, ops)
    cache = model.new_cache()
    t0 = time.perf_counter()
    logits = model.forward(ids, cache, 0)
    tok = ops.next_token(logits, None, 0)  # type: ignore[arg-type]
    prefill_s = time.perf_counter() - t0
    before = ops.costs().to_dict().get("linear", {}).get("wall_s", 0.0)
    t0 = time.perf_counter()
    logits = model.forward([max(tok, 0)], cache, len(ids))
    step_s = time.perf_counter() - t0
    head_s = ops.costs().to_dict()["linear"]["wall_s"] - before
    head_s = head_s / 8  # 7 layer linears + the head block: a rough share, stated
    blocks = -(-cfg.vocab_size // block)
    return {
        "bench": "smollm2",
        "measured": "layer 0 + one LM-head block; 30 layers and the full head extrapolated",
        "context_tokens": context_tokens,
        "prompt_tokens": len(ids),
        "prefill_one_layer_s": round(prefill_s, 2),
        "decode_step_one_layer_s": round(step_s, 2),
        "rounds": ops.refresher.stats.rounds,
        "estimated_s_per_token": round(cfg.n_layers * (step_s - head_s) + blocks * head_s, 1),
    }


# Held out from the calibration set (`he.calibrate.SENTENCES`): ten paraphrase pairs.
FIDELITY_SENTENCES = [
    "The train to the airport leaves every ten minutes.",
    "Trains run to the airport every ten minutes.",
    "She planted tomatoes and basil in her garden.",
    "Her garden has new tomato and basil plants.",
    "The museum is closed on Mondays.",
    "On Mondays the museum does not open.",
    "He fixed the bicycle's flat tyre himself.",
    "The flat tire on his bike was repaired by him.",
    "Heavy snow delayed flights across the region.",
    "Flights in the area were late because of snow.",
    "Our team won the football match last night.",
    "We won yesterday evening's soccer game.",
    "Drink plenty of water when it is hot.",
    "Stay hydrated during hot weather.",
    "The library lends books, films and music.",
    "You can borrow books, movies and albums at the library.",
    "A new phone costs more than I expected.",
    "The price of the new phone surprised me.",
    "The children laughed at the clown's tricks.",
    "The clown made the kids laugh with his jokes.",
]


def _ranking(he_m: torch.Tensor, pl_m: torch.Tensor) -> dict:
    """How the pair-similarity ranking under HE compares with plaintext's: strict equality,
    Kendall's tau, the discordant comparisons and the largest plaintext gap among them (how
    close to a tie a swapped comparison was), and nearest-neighbour agreement per sentence."""
    n = he_m.shape[0]
    sim_he, sim_pl = ((m @ m.T).double() for m in (he_m, pl_m))
    iu = torch.triu_indices(n, n, 1)
    s_he, s_pl = sim_he[iu[0], iu[1]], sim_pl[iu[0], iu[1]]
    d_he = torch.sign(s_he[:, None] - s_he[None, :])
    d_pl = s_pl[:, None] - s_pl[None, :]
    upper = torch.triu(torch.ones_like(d_pl, dtype=torch.bool), 1)
    disc = (d_he != torch.sign(d_pl)) & upper
    m = int(upper.sum())
    sim_he.fill_diagonal_(-2)  # a sentence is not its own neighbour
    sim_pl.fill_diagonal_(-2)
    nn_he, nn_pl = sim_he.argmax(1), sim_pl.argmax(1)
    rows_equal = (torch.argsort(sim_he, dim=1) == torch.argsort(sim_pl, dim=1)).all(1).sum()
    return {
        "pairs": int(s_pl.numel()),
        "pair_ranking_equal": bool(torch.equal(torch.argsort(s_he), torch.argsort(s_pl))),
        "discordant_comparisons": int(disc.sum()),
        "comparisons": m,
        "kendall_tau": 1 - 2 * int(disc.sum()) / m if m else 1.0,
        "max_plain_gap_of_discordant": float(d_pl.abs()[disc].max()) if disc.any() else 0.0,
        "max_similarity_error": float((s_he - s_pl).abs().max()) if s_pl.numel() else 0.0,
        "nearest_neighbour_equal": int((nn_he == nn_pl).sum()),
        "per_sentence_ranking_equal": int(rows_equal),
    }


def bench_fidelity(count: int = 20, say=None) -> dict:
    """MiniLM-L6 under CKKS on `count` held-out sentences (ten paraphrase pairs, not used for
    calibration): cosine to plaintext per sentence and the pair ranking (`_ranking`)."""
    if not 2 <= count <= len(FIDELITY_SENTENCES):
        raise ValueError(f"count must lie in [2, {len(FIDELITY_SENTENCES)}]")
    model = privinfer.load("minilm-l6")
    ops = HeOps(ranges=minilm_ranges())
    bert = model.build(ops)
    he, plain, rows = [], [], []
    for k, text in enumerate(FIDELITY_SENTENCES[:count]):
        ids = model.token_ids(text)
        r0, t0 = ops.refresher.stats.rounds, time.perf_counter()
        he.append(ops.reveal(bert.encode(ids))[0])
        plain.append(model.plain().ops.reveal(model.plain().encode(ids))[0])
        cos = float(torch.nn.functional.cosine_similarity(he[-1], plain[-1], dim=0))
        rows.append({"tokens": len(ids), "s": round(time.perf_counter() - t0, 1), "cos": cos,
                     "rounds": ops.refresher.stats.rounds - r0})  # fmt: skip
        if say:
            say(f"sentence {k + 1}/{count}: {len(ids)} tokens, cosine {cos:.7f}, {rows[-1]['s']} s")
    return {
        "bench": "fidelity",
        "sentences": rows,
        "min_cosine": min(r["cos"] for r in rows),
        **_ranking(torch.stack(he), torch.stack(plain)),
    }


def main(argv: list[str] | None = None) -> int:
    """python -m privinfer.bench.he_bench {matvec,packed,minilm,minilm-cli,smollm2,fidelity,
    deliver} [--json]"""
    p = argparse.ArgumentParser(prog="python -m privinfer.bench.he_bench")
    p.add_argument(
        "which",
        choices=["matvec", "packed", "minilm", "minilm-cli", "smollm2", "fidelity", "deliver"],
    )
    p.add_argument("--json", action="store_true")
    p.add_argument("--tokens", type=int, default=16)
    p.add_argument("--two-process", action="store_true")
    a = p.parse_args(argv)
    if a.which == "matvec":
        out = bench_matvec()
    elif a.which == "packed":
        out = bench_packed()
    elif a.which == "minilm":
        out = bench_minilm(a.tokens, a.two_process)
    elif a.which == "minilm-cli":
        out = bench_minilm_cli()
    elif a.which == "fidelity":
        out = bench_fidelity()
    elif a.which == "deliver":
        out = {"minilm": bench_deliver(1, 2), "smollm2_context_16": bench_deliver(96, 2)}
    else:
        out = bench_smollm2()
    print(json.dumps(out) if a.json else "\n".join(f"{k}: {v}" for k, v in out.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
