"""The `mpc` mode: generation and embeddings by three compute parties on secret shares
(semi-honest, honest majority: no single party learns the prompt, the weights or the output).

With `cluster=` the client joins parties already running (`privinfer mpc party`); without it,
this process shares the model into three throwaway stores, starts three local party processes
on loopback, and acts as the client (see `privinfer.mpc.launcher`). Progress goes to stderr;
per-party rounds, bytes and peak RSS are added to the generation stats' JSON under "mpc".
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from privinfer.errors import InputError
from privinfer.models.generate import GenerationStats, check_budget
from privinfer.models.ops import Sampler
from privinfer.modes import register


def _summary(report: dict[str, Any]) -> dict[str, Any]:
    """Per-party prefill/decode rounds and bytes, and peak RSS, from the parties' STATS."""
    out: dict[str, Any] = {"share_set": report.get("share_set"), "parties": {}}
    for pid, st in report.get("parties", {}).items():
        toks = st.get("tokens", [])
        row: dict[str, Any] = {
            "setup": st.get("setup"),
            "prefill": st.get("prefill"),
            "peak_rss_mb": st.get("peak_rss_mb"),
            "bytes_to_client": st.get("bytes_to_client"),
            "bytes_from_client": st.get("bytes_from_client"),
        }
        if toks:
            row["decode_per_token"] = toks
            row["decode_rounds_per_token_mean"] = sum(t["rounds"] for t in toks) / len(toks)
            row["decode_bytes_sent_per_token_mean"] = sum(t["bytes_sent"] for t in toks) / len(toks)
        if "texts" in st:
            row["texts"] = st["texts"]
        row["by_op"] = st.get("by_op")
        out["parties"][pid] = row
    return out


def _attach(stats: GenerationStats, report: dict[str, Any]) -> None:
    base = type(stats).to_json
    summary = _summary(report)

    def to_json() -> dict[str, object]:
        return {**base(stats), "per_token_s": [round(t, 6) for t in stats.token_s], "mpc": summary}

    stats.to_json = to_json  # type: ignore[method-assign]
    stats.mpc = summary  # type: ignore[attr-defined]


def mpc_generate(
    model: Any,
    prompt_ids: Sequence[int],
    *,
    sampler: Sampler,
    max_new_tokens: int,
    stats: GenerationStats,
    cluster: str | None = None,
    connect_timeout_s: float = 20.0,
    timeout_s: float = 120.0,
    progress: Any = "stderr",
    **kw: Any,
) -> Iterator[int]:
    """Tokens revealed to this client only; greedy or Gumbel-max sampling inside MPC."""
    from privinfer.mpc.launcher import LocalCluster, stderr_progress
    from privinfer.mpc.remote_client import MpcClient

    if kw:
        raise InputError(f"mode mpc does not take option(s) {', '.join(sorted(kw))}")
    if sampler.top_p < 1.0:
        raise InputError(
            "top_p < 1 is not supported in mpc mode: nucleus sampling would need a private sort "
            "of the whole vocabulary; use --temperature with --top-p 1"
        )
    check_budget(len(prompt_ids), max_new_tokens, model.cfg.max_context)
    prog = stderr_progress if progress == "stderr" else progress
    with contextlib.ExitStack() as stack:
        if cluster is None:
            local = stack.enter_context(LocalCluster(model, model.name, progress=prog))
            client = MpcClient(
                str(local.cluster_path),
                share_set=local.share_set,
                connect_timeout_s=connect_timeout_s,
                timeout_s=timeout_s,
            )
        else:
            client = MpcClient(cluster, connect_timeout_s=connect_timeout_s, timeout_s=timeout_s)
        if prog:
            prog("parties ready; prefill and decode under MPC")
        yield from client.generate(
            model.name,
            model.cfg,
            prompt_ids,
            sampler=sampler,
            max_new_tokens=max_new_tokens,
            stop_ids=model.tokenizer.eos_ids,
            stats=stats,
        )
        _attach(stats, client.report)


def mpc_embed(
    model: Any,
    ids_list: list[list[int]],
    *,
    cluster: str | None = None,
    connect_timeout_s: float = 20.0,
    timeout_s: float = 120.0,
    progress: Any = "stderr",
    **kw: Any,
) -> torch.Tensor:
    """Sentence embeddings [n, dim], revealed to this client only."""
    from privinfer.mpc.launcher import LocalCluster, stderr_progress
    from privinfer.mpc.remote_client import MpcClient

    if kw:
        raise InputError(f"mode mpc does not take option(s) {', '.join(sorted(kw))}")
    prog = stderr_progress if progress == "stderr" else progress
    with contextlib.ExitStack() as stack:
        if cluster is None:
            local = stack.enter_context(LocalCluster(model, model.name, progress=prog))
            cluster, share_set = str(local.cluster_path), local.share_set
        else:
            share_set = None
        client = MpcClient(
            cluster, share_set=share_set, connect_timeout_s=connect_timeout_s, timeout_s=timeout_s
        )
        return client.embed(model.name, int(model.cfg.vocab_size), ids_list)


register("mpc", generate=mpc_generate, embed=mpc_embed)
