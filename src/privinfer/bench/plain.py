"""Plain-engine benchmark: privinfer vs transformers / sentence-transformers, same run, same threads.

Runs are interleaved (ours, theirs, ours, ...) so machine noise hits both alike; figures are medians.
"""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

import privinfer

# 32 tokens of English once the ChatML template is not applied (raw text prompt).
PROMPT_32 = (
    "The history of the city of Paris begins with a small settlement on an island in the "
    "Seine, where a Celtic tribe built"
)


def _median_s(fn: Callable[[], Any], runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def prompt_ids(lm: Any, n: int) -> list[int]:
    """The first `n` token ids of the fixed benchmark text (raw, no chat template)."""
    ids = lm.tokenizer.encode(PROMPT_32 * 4)
    return ids[:n]


def ours_decode(lm: Any, ids: list[int], steps: int) -> tuple[float, float]:
    """Greedy decode of `steps` tokens on the plain engine: (prefill seconds, median s per token)."""
    m = lm.plain()
    with torch.inference_mode():
        cache = m.new_cache()
        t0 = time.perf_counter()
        logits = m.forward(ids, cache, 0)
        prefill = time.perf_counter() - t0
        tok, per = int(logits[-1].argmax()), []
        for i in range(steps):
            t0 = time.perf_counter()
            tok = int(m.forward([tok], cache, len(ids) + i)[-1].argmax())
            per.append(time.perf_counter() - t0)
    return prefill, statistics.median(per)


def _hf_decode(ref: Any, ids: list[int], steps: int) -> tuple[float, float]:
    with torch.inference_mode():
        t0 = time.perf_counter()
        out = ref(torch.tensor([ids]), use_cache=True)
        prefill = time.perf_counter() - t0
        past, tok, per = out.past_key_values, int(out.logits[0, -1].argmax()), []
        for _ in range(steps):
            t0 = time.perf_counter()
            out = ref(torch.tensor([[tok]]), past_key_values=past, use_cache=True)
            past, tok = out.past_key_values, int(out.logits[0, -1].argmax())
            per.append(time.perf_counter() - t0)
    return prefill, statistics.median(per)


def bench_plain(
    *,
    runs: int = 5,
    decode_steps: int = 16,
    with_reference: bool = True,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """SmolLM2 32-token prefill and per-token decode, MiniLM embedding; medians of `runs`."""
    say = progress or (lambda _m: None)
    res: dict[str, Any] = {
        "threads": torch.get_num_threads(),
        "runs": runs,
        "decode_steps": decode_steps,
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "torch": torch.__version__,
    }
    say("loading smollm2-135m")
    lm = privinfer.load("smollm2-135m")
    ids = prompt_ids(lm, 32)
    ref = None
    if with_reference:
        try:
            # lazy: transformers is a test/bench extra (ImportError -> no reference)
            import transformers  # noqa: F401

            say("loading transformers' LlamaForCausalLM from the same GGUF")
            from transformers import AutoModelForCausalLM  # lazy: test/bench extra
            from transformers.utils import logging as hf_logging  # lazy: test/bench extra

            hf_logging.set_verbosity_error()
            hf_logging.disable_progress_bar()
            ref = AutoModelForCausalLM.from_pretrained(
                str(lm.source.parent), gguf_file=lm.source.name, dtype=torch.float32
            ).eval()
        except ImportError:
            res["reference"] = "transformers not installed"
    ours_p, ours_d, hf_p, hf_d = [], [], [], []
    ours_decode(lm, ids, 2)  # warm-up
    if ref is not None:
        _hf_decode(ref, ids, 2)
    for r in range(runs):
        say(f"smollm2 run {r + 1}/{runs}")
        p, d = ours_decode(lm, ids, decode_steps)
        ours_p.append(p)
        ours_d.append(d)
        if ref is not None:
            p, d = _hf_decode(ref, ids, decode_steps)
            hf_p.append(p)
            hf_d.append(d)
    med = statistics.median
    res["smollm2"] = {
        "prompt_tokens": len(ids),
        "prefill_s": med(ours_p),
        "decode_s_per_token": med(ours_d),
    }
    if ref is not None:
        res["smollm2"].update(
            {
                "transformers_prefill_s": med(hf_p),
                "transformers_decode_s_per_token": med(hf_d),
                "prefill_ratio": med(ours_p) / med(hf_p),
                "decode_ratio": med(ours_d) / med(hf_d),
            }
        )
    del ref
    res["minilm"] = _bench_minilm(runs, with_reference, say)
    return res


def _bench_minilm(runs: int, with_reference: bool, say: Callable[[str], None]) -> dict[str, Any]:
    say("loading minilm-l6")
    em = privinfer.load("minilm-l6")
    text = "A quick benchmark sentence about private inference on two small CPU cores today."
    n_tokens = len(em.token_ids(text))
    out: dict[str, Any] = {"tokens": n_tokens}
    em.embed(text)
    st = None
    if with_reference:
        try:
            # lazy: sentence-transformers is a test/bench extra (ImportError -> no reference)
            from sentence_transformers import SentenceTransformer

            st = SentenceTransformer(str(em.source), device="cpu")
            st.encode([text])
        except ImportError:
            out["reference"] = "sentence-transformers not installed"
    ours, theirs = [], []
    reps = max(runs, 20)
    for _ in range(reps):
        ours.append(_median_s(lambda: em.embed(text), 1))
        if st is not None:
            theirs.append(_median_s(lambda: st.encode([text]), 1))
    out["embed_s"] = statistics.median(ours)
    if st is not None:
        out["sentence_transformers_embed_s"] = statistics.median(theirs)
        out["ratio"] = out["embed_s"] / out["sentence_transformers_embed_s"]
    return out
