"""One generation through a mode plug-in, as events: text deltas cut at stop strings, logprobs
where the mode reveals logits, and the per-token figures of `GenerationStats`.

Stop strings are matched on the decoded text, across token boundaries: text that could be the
start of a stop string is held back until the next token decides; at a match the output ends
just before the stop string, the mode's generator is closed (an MPC session is told to stop),
and the finish reason is "stop". Running out of tokens is "length", the model's EOS "stop".
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from privinfer.models.generate import GenerationStats
from privinfer.models.ops import Sampler
from privinfer.modes import Mode, Request


@dataclass
class Piece:
    """What one token adds: the text now safe to show (may be empty), its logprob entry."""

    choice: int
    text: str
    logprob: dict[str, Any] | None
    figures: dict[str, Any]


@dataclass
class Finish:
    """The end of one choice."""

    choice: int
    text: str  # held-back text released at the end (no stop string in it)
    reason: str  # "stop" | "length"
    completion_tokens: int
    prompt_tokens: int
    figures: dict[str, Any]
    details: dict[str, Any] = field(default_factory=dict)


def holdback(text: str, stops: Sequence[str]) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of some stop string."""
    best = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), best, -1):
            if text.endswith(s[:k]):
                best = k
                break
    return best


def first_stop(text: str, stops: Sequence[str]) -> int:
    """Index of the earliest stop string in `text`, or -1."""
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(hits) if hits else -1


def figures(stats: GenerationStats) -> dict[str, Any]:
    """Per-token figures for the client: time of the last token, the engine's rounds and bytes
    (mpc: party 0's cumulative rounds and party-to-party bytes sent as of this token, which the
    parties send with each output share; he's refreshes: at the end), and this client's own
    bytes each way as they accrue where the plug-in counts them (mpc, he). All are public
    counts or timings: no text, no token ids."""
    total = stats.costs.total()
    last = stats.token_s[-1] if stats.token_s else stats.prefill_s
    out = {
        "tokens": stats.new_tokens,
        "token_s": round(last, 6),
        "prefill_s": round(stats.prefill_s, 6),
        "rounds": total.rounds,
        "bytes_sent": total.bytes_sent,
        "bytes_received": total.bytes_received,
    }
    live = stats.details.get("engine_live") or {}
    if total.rounds == 0 and live:  # the mode's totals come at the end; its counters so far
        out["rounds"] = int(live.get("rounds", 0))
        out["bytes_sent"] = int(live.get("bytes_sent", 0))
        del out["bytes_received"]  # not in the parties' per-token counters
    link = stats.details.get("client_link") or {}  # this client's own traffic, token by token
    for k in ("bytes_sent", "bytes_received"):
        if k in link:
            out["client_" + k] = int(link[k])
    return out


class LogprobTracker:
    """Log-probabilities of the chosen tokens under the plain model (temperature 1), kept in
    step with the generation on a KV cache of its own. Only for modes that reveal logits."""

    def __init__(self, lm: Any, prompt_ids: Sequence[int], top: int) -> None:
        import torch

        self._torch = torch
        self.lm, self.top = lm, top
        self.model = lm.plain()
        self.cache = self.model.new_cache()
        with torch.inference_mode():
            self.row = self.model.forward(list(prompt_ids), self.cache, 0)[-1]
        self.pos = len(prompt_ids)

    def _entry(self, tok: int, lp: float) -> dict[str, Any]:
        text = self.lm.tokenizer.decode([tok], skip_special=False)
        return {"token": text, "logprob": lp, "bytes": list(text.encode("utf-8"))}

    def push(self, tok: int) -> dict[str, Any]:
        torch = self._torch
        with torch.inference_mode():
            logp = torch.log_softmax(self.row.float(), dim=-1)
            out = self._entry(tok, _finite(float(logp[tok])))
            vals, idx = torch.topk(logp, self.top) if self.top else ([], [])
            out["top_logprobs"] = [
                self._entry(int(i), _finite(float(v))) for v, i in zip(vals, idx, strict=True)
            ]
            self.row = self.model.forward([tok], self.cache, self.pos)[-1]
        self.pos += 1
        return out


def _finite(x: float) -> float:
    return x if math.isfinite(x) else -9999.0  # JSON has no -inf; OpenAI uses -9999 too


def run_choice(
    mode: Mode,
    lm: Any,
    options: dict[str, Any],
    prompt_ids: list[int],
    *,
    choice: int,
    sampler: Sampler,
    max_new_tokens: int,
    stops: Sequence[str],
    top_logprobs: int | None,
) -> Iterator[Piece | Finish]:
    """Yield a Piece per token, then one Finish. The mode's generator is closed on every path
    (early stop, consumer gone, error), which ends its session."""
    stats = GenerationStats()
    gen = mode.generate(lm, Request(prompt_ids, sampler, max_new_tokens), stats, **options)
    tracker = LogprobTracker(lm, prompt_ids, top_logprobs) if top_logprobs is not None else None
    dec = lm.tokenizer.stream_decoder()
    pending, n, reason = "", 0, None
    try:
        for tok in gen:
            n += 1
            lp = tracker.push(tok) if tracker else None
            pending += dec.push(tok)
            cut = first_stop(pending, stops) if stops else -1
            if cut >= 0:
                pending, reason = pending[:cut], "stop"
                break
            keep = holdback(pending, stops) if stops else 0
            out, pending = pending[: len(pending) - keep], pending[len(pending) - keep :]
            yield Piece(choice, out, lp, figures(stats))
    finally:
        gen.close()
    if reason is None:
        reason = "stop" if stats.stop_reason == "eos" else "length"
    yield Finish(choice, pending, reason, n, len(prompt_ids), figures(stats), dict(stats.details))
