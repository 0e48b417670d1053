"""Benchmarks of the mpc+he mode (two parties: client and model owner).

- `mpc-he-smollm2`: SmolLM2-135M greedy generation through `generate --mode mpc+he` (server
  and client as two processes over TLS, the path a user runs), prefill and decode per token.
  With the OtLinear backend a token costs tens of GB of OT traffic (every linear layer, the
  embedding and the LM head go through Gilboa products); the default backend is HeLinear.
- `mpc-he-layer`: one real SmolLM2 decoder layer (massive-activation range, layer 20 by
  default), one decode step against a cache of the chat prompt, the two parties as threads
  over memory links: per-op rounds, bytes and seconds (online and offline apart), the error
  against float64, and a per-token extrapolation (30 layers + embedding + LM head + argmax)
  that says which parts are measured and which are derived.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

import privinfer
from privinfer.engines.plain import PlainOps
from privinfer.models.llama import Llama
from privinfer.models.ops import Sampler
from privinfer.twopc import ring
from privinfer.twopc.engine import MpcHeOps, placeholder_weights
from privinfer.twopc.runtime import run_local

Say = Callable[[str], None]
PROMPT = "What is the capital of France?"


class _Float64(PlainOps):
    def prepare(self, name: str, weight: torch.Tensor, *, kind: Any) -> torch.Tensor:
        return weight.detach().to(torch.float64)


def _layer_inputs(lm: Any, layer: int) -> dict[str, Any]:
    """Float64 plain run of the prompt up to `layer`: its input rows, its K/V for all but the
    last row, and its output for the last row (the decode step the 2PC run repeats)."""
    cfg = lm.cfg
    ids = lm.prompt_ids(PROMPT)
    m = Llama(cfg, lm.weights, _Float64())
    with torch.inference_mode():
        x = m.ops.embed(m.embed_tokens, ids)
        pos = list(range(len(ids)))
        for i in range(layer):
            L = m.layers[i]
            cache = m.new_cache()
            q, k, v = m._qkv(L, x, pos)
            x = m.ops.add(x, m.ops.linear(m._attend(i, cache, 0, q, k, v), L["o"]))
            x = m._mlp(L, x)
        L = m.layers[layer]
        cache = m.new_cache()
        q, k, v = m._qkv(L, x[:-1], pos[:-1])
        m.ops.cache_append(cache, layer, k, v)
        q, k, v = m._qkv(L, x[-1:], pos[-1:])
        h = m.ops.add(x[-1:], m.ops.linear(m._attend(layer, cache, len(ids) - 1, q, k, v), L["o"]))
        out = m._mlp(L, h)
        kc, vc = cache.k[layer][: len(ids)], cache.v[layer][: len(ids)]
    return {"ids": ids, "x": x[-1:], "k": kc[:-1], "v": vc[:-1], "out": out}


def _one_layer_weights(lm: Any, layer: int) -> tuple[Any, dict[str, torch.Tensor]]:
    from dataclasses import replace

    cfg = replace(lm.cfg, n_layers=1)
    src = f"model.layers.{layer}."
    w = {k.replace(src, "model.layers.0."): v for k, v in lm.weights.items() if k.startswith(src)}
    for k in ("model.embed_tokens.weight", "model.norm.weight"):
        w[k] = lm.weights[k]
    return cfg, w


def _backend() -> str:
    """The class name of the engine's default linear backend (what these runs use)."""
    from privinfer.twopc.linear import BACKENDS, DEFAULT_BACKEND

    return BACKENDS[DEFAULT_BACKEND].rpartition(":")[2]


def bench_layer(layer: int = 20, say: Say = print) -> dict[str, Any]:
    """One decode step of SmolLM2's decoder layer `layer` under MpcHeOps (see module doc)."""
    lm = privinfer.load("smollm2-135m")
    ref = _layer_inputs(lm, layer)
    cfg, w = _one_layer_weights(lm, layer)
    shapes = {k: list(v.shape) for k, v in w.items()}
    t = len(ref["ids"])
    f = 16
    enc = {k: ring.encode(ref[k].numpy(), f) for k in ("x", "k", "v")}
    say(f"mpc-he-layer: SmolLM2 layer {layer}, decode step at position {t - 1}, {_backend()}")

    def prog(p: Any) -> dict[str, Any]:
        shares = {
            k: ring.share_input(p, 1, v.reshape(-1) if p.pid == 1 else None, v.size).reshape(
                v.shape
            )
            for k, v in enc.items()
        }
        ops = MpcHeOps(p)
        m = Llama(cfg, w if p.pid == 0 else placeholder_weights(shapes), ops)
        cache = ops.new_cache(1)
        cache[0] = [shares["k"], shares["v"]]
        c0, w0 = time.thread_time(), time.perf_counter()
        q, k, v = m._qkv(m.layers[0], shares["x"], [t - 1])
        a = m._attend(0, cache, t - 1, q, k, v)
        h = ops.add(shares["x"], ops.linear(a, m.layers[0]["o"]))
        out = m._mlp(m.layers[0], h)
        cpu, wall = time.thread_time() - c0, time.perf_counter() - w0
        got = ops.reveal(out)
        costs = ops.costs().to_dict()
        s0 = p.link.stats.bytes_sent
        e0 = time.perf_counter()
        ops.embed(m.embed_tokens, ref["ids"][-1:] if p.pid == 1 else [0])  # one token's lookup
        embed = {"wall_s": time.perf_counter() - e0, "bytes_sent": p.link.stats.bytes_sent - s0}
        s0, e0 = p.link.stats.bytes_sent, time.perf_counter()
        ops.next_token(ops.linear(out, m.lm_head), Sampler(), 0)  # LM head + argmax, measured
        head = {"wall_s": time.perf_counter() - e0, "bytes_sent": p.link.stats.bytes_sent - s0}
        return {
            "cpu_s": cpu,
            "wall_s": wall,
            "out": got,
            "costs": costs,
            "embed": embed,
            "head": head,
        }

    server, client = run_local(prog, timeout_s=3600)
    err = float((client["out"] - ref["out"]).abs().max())
    scale = float(ref["out"].abs().max())
    costs = {"server": server["costs"], "client": client["costs"]}
    sent = {
        who: sum(c["bytes_sent"] for op, c in cs.items() if op != "setup/offline")
        for who, cs in costs.items()
    }
    lin = [server["costs"].get("linear/offline", {}), client["costs"].get("linear/offline", {})]
    lin_bytes = sum(c.get("bytes_sent", 0) for c in lin)
    embed_bytes = server["embed"]["bytes_sent"] + client["embed"]["bytes_sent"]
    embed_s = max(server["embed"]["wall_s"], client["embed"]["wall_s"])
    head_bytes = server["head"]["bytes_sent"] + client["head"]["bytes_sent"]
    head_s = max(server["head"]["wall_s"], client["head"]["wall_s"])
    r = {
        "layer": layer,
        "context": t,
        "threads": "1 per party (two threads of one process, memory links)",
        "wall_s": round(max(server["wall_s"], client["wall_s"]), 2),
        "cpu_s": {"server": round(server["cpu_s"], 2), "client": round(client["cpu_s"], 2)},
        "bytes_sent": sent,
        "linear_offline_bytes": lin_bytes,
        "max_abs_error": err,
        "max_abs_output": scale,
        "costs": costs,
        "embedding_lookup": {"bytes": embed_bytes, "wall_s": round(embed_s, 2)},
        "lm_head_and_argmax": {"bytes": head_bytes, "wall_s": round(head_s, 2)},
        "per_token_extrapolated": {
            "how": "30 x this layer + one token's embedding + the LM head and argmax over the "
            "vocabulary (each measured in this run); the final norm left out",
            "bytes": int(30 * sum(sent.values()) + embed_bytes + head_bytes),
            "wall_s": round(30 * max(server["wall_s"], client["wall_s"]) + embed_s + head_s),
        },
    }
    say(f"mpc-he-layer: {r['wall_s']} s, {sum(sent.values()) / 1e6:.0f} MB, error {err:.2e}")
    return r


def workload_layer(args: argparse.Namespace, say: Say) -> dict[str, Any]:
    r = bench_layer(say=say)
    ex = r["per_token_extrapolated"]
    how = (
        f"threads over memory links, 1 thr/party, {_backend()}; "
        f"{r['linear_offline_bytes'] / 1e6:.0f} "
        f"MB of it linear offline; max abs error {r['max_abs_error']:.2e} (|out| <= "
        f"{r['max_abs_output']:.0f})"
    )
    rows = [
        [
            f"SmolLM2 layer {r['layer']}, one decode step (context {r['context']})",
            f"{r['wall_s']:.0f} s",
            "",
            "",
            how,
        ],
        [
            "SmolLM2 decode per token (extrapolated)",
            f"{ex['wall_s'] / 60:.0f} min",
            "",
            "",
            f"{ex['bytes'] / 1e9:.0f} GB; " + ex["how"],
        ],
    ]
    return {"mpc-he-layer": {**r, "rows": rows}, "plain": None}


def run_mpc_he(
    args: argparse.Namespace, runs: int, steps: int, say: Say, plain: dict[str, Any]
) -> dict[str, Any]:
    """`privinfer bench generate --mode mpc+he`: the mpc-he-smollm2 measurement."""
    return workload_smollm2(args, say)["mpc-he-smollm2"]


def workload_smollm2(args: argparse.Namespace, say: Say) -> dict[str, Any]:
    tokens = 2 if args.quick else (args.steps or 2) + 1
    lm = privinfer.load("smollm2-135m")
    plain = lm.generate(PROMPT, max_new_tokens=tokens)
    say("mpc-he-smollm2: SmolLM2-135M, client and server as two processes over TLS")
    t0 = time.perf_counter()
    got = lm.generate(PROMPT, max_new_tokens=tokens, mode="mpc+he")
    st = got.stats
    r = {
        "prompt_tokens": st.prompt_tokens,
        "identical_to_plain": got.token_ids == plain.token_ids,
        "prefill_s": round(st.prefill_s, 1),
        "decode_s_per_token": round(statistics.median(st.token_s), 1) if st.token_s else None,
        "wall_s": round(time.perf_counter() - t0, 1),
        **st.details.get("mpc+he", {}),
    }
    row = [f"SmolLM2 prefill {r['prompt_tokens']} tokens", f"{r['prefill_s']:.0f} s", "", "", ""]
    return {"mpc-he-smollm2": {**r, "rows": [row]}, "plain": None}


def workload_minilm(args: argparse.Namespace, say: Say) -> dict[str, Any]:
    """MiniLM through `embed --mode mpc+he` (two processes over TLS): cosine to plain."""
    text = "Paris." if args.quick else "Paris is in France."
    em = privinfer.load("minilm-l6")
    plain = em.embed_with_stats([text])
    say(f"mpc-he-minilm: {text!r}, client and server as two processes over TLS, {_backend()}")
    t0 = time.perf_counter()
    got = em.embed_with_stats([text], mode="mpc+he")
    wall = time.perf_counter() - t0
    cos = float(torch.nn.functional.cosine_similarity(got.vectors, plain.vectors).item())
    details = got.stats.details.get("mpc+he", {})
    sent = {
        who: sum(c["bytes_sent"] for c in (details.get(who) or {}).values())
        for who in ("server", "client")
    }
    r = {"text": text, "tokens": len(em.token_ids(text)), "cosine_to_plain": cos}
    r |= {"wall_s": round(wall, 1), "bytes_sent": sent, **details}
    how = (
        f"2 processes, TLS loopback, 1 thr each, {_backend()}, {r['tokens']} tokens, "
        f"{sum(sent.values()) / 1e9:.1f} GB sent in all"
    )
    rows = [["MiniLM embedding, cosine to plain", f"{cos:.5f}", "", "", how]]
    rows.append(["MiniLM embedding, wall", f"{wall:.0f} s", "", "", how])
    return {"mpc-he-minilm": {**r, "rows": rows}, "plain": None}


WORKLOADS: dict[str, Callable[[argparse.Namespace, Say], dict[str, Any]]] = {
    "mpc-he-layer": workload_layer,
    "mpc-he-smollm2": workload_smollm2,
    "mpc-he-minilm": workload_minilm,
}
