"""`privinfer generate` and `privinfer embed`: every argument is checked before the model loads."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from privinfer import modes
from privinfer.cli import options
from privinfer.cli.main import add_common
from privinfer.errors import InputError


class Progress:
    """Loading progress on stderr (a bar on a terminal, one line otherwise)."""

    def __init__(self, label: str, quiet: bool = False) -> None:
        self.label, self.quiet = label, quiet
        self.tty = sys.stderr.isatty()
        self.t0 = time.perf_counter()
        self._last = -1

    def __call__(self, done: int, total: int) -> None:
        if self.quiet or not self.tty:
            return
        pct = int(100 * done / max(total, 1))
        if pct != self._last:
            self._last = pct
            bar = "#" * (pct // 5)
            sys.stderr.write(f"\r{self.label} [{bar:<20}] {pct:3d}%")
            sys.stderr.flush()

    def start(self) -> None:
        if not self.quiet and not self.tty:
            sys.stderr.write(f"{self.label} ...\n")

    def done(self) -> None:
        if not self.quiet:
            end = "\r" if self.tty else ""
            sys.stderr.write(
                f"{end}{self.label}: done in {time.perf_counter() - self.t0:.1f} s{' ' * 20}\n"
            )
            sys.stderr.flush()


def load_model(name: str, args: argparse.Namespace) -> Any:
    """Load `name` with --threads, showing progress on stderr unless --json."""
    import privinfer

    bar = Progress(f"loading {name}", quiet=args.json)
    bar.start()
    model = privinfer.load(name, threads=args.threads, progress=bar)
    bar.done()
    return model


def check_generate(args: argparse.Namespace) -> dict[str, Any]:
    """Every generate argument, before anything loads; returns the mode's options."""
    options.check_threads(args)
    options.check_positive("--max-tokens", args.max_tokens)
    modes.check_sampling(args.temperature, args.top_p, args.seed)
    options.check_text(args.prompt, "the prompt")
    opts = options.mode_options(args, "generate")
    if not _remote_tee(args.mode, opts):
        options.check_model(args.model)
    return opts


def _remote_tee(mode: str, opts: dict[str, Any]) -> bool:
    # the client of a remote enclave needs no weights: it attests, then streams over the channel
    return mode == "tee" and bool(opts.get("server"))


def cmd_generate(args: argparse.Namespace) -> int:
    opts = check_generate(args)
    if _remote_tee(args.mode, opts):
        from privinfer.cli.tee import generate_remote

        return generate_remote(args, opts)
    from privinfer.api import LanguageModel, set_threads

    lm = load_model(args.model, args)
    if not isinstance(lm, LanguageModel):
        raise InputError(f"{args.model} is an encoder; use `privinfer embed`")
    given = {k: v for k, v in opts.items() if v is not None}
    stream = lm.stream(
        args.prompt,
        mode=args.mode,
        chat=not args.raw,
        max_new_tokens=args.max_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        seed=args.seed,
        **given,
    )
    for piece in stream:
        if not args.json:
            sys.stdout.write(piece)
            sys.stdout.flush()
    assert stream.result is not None
    if args.json:
        out = stream.result.to_dict()
        out["threads"] = set_threads(None)
        out["load_s"] = round(getattr(lm, "load_s", 0.0), 3)
        print(json.dumps(out))
    else:
        sys.stdout.write("\n")
    return 0


def check_embed(args: argparse.Namespace) -> dict[str, Any]:
    """Every embed argument, before anything loads; returns the mode's options."""
    options.check_threads(args)
    for i, text in enumerate(args.texts, 1):
        if not text.strip():
            raise InputError(f"text {i} is empty: cannot embed an empty text")
    opts = options.mode_options(args, "embed")
    options.check_model(args.model)
    return opts


def cmd_embed(args: argparse.Namespace) -> int:
    opts = check_embed(args)
    from privinfer.api import EmbeddingModel, peak_rss_mb, set_threads

    em = load_model(args.model, args)
    if not isinstance(em, EmbeddingModel):
        raise InputError(f"{args.model} is a decoder; use `privinfer generate`")
    given = {k: v for k, v in opts.items() if v is not None}
    t0 = time.perf_counter()
    result = em.embed_with_stats(args.texts, mode=args.mode, **given)
    vecs = result.vectors
    elapsed = time.perf_counter() - t0
    out: dict[str, Any] = {
        "mode": args.mode,
        "model": args.model,
        "dimension": int(vecs.shape[1]),
        "texts": len(args.texts),
        "embed_s": round(elapsed, 4),
        "threads": set_threads(None),
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }
    out.update(result.details)  # the mode's figures: he's refresh rounds, mpc's per-party costs
    if result.costs.by_op:
        out["costs"] = result.costs.to_dict()
    if len(args.texts) >= 2:
        out["cosine"] = round(
            float((vecs[0] * vecs[1]).sum() / (vecs[0].norm() * vecs[1].norm())), 6
        )
    if args.json:
        out["embeddings"] = [[round(float(x), 7) for x in v] for v in vecs]
        print(json.dumps(out))
    else:
        print(f"dimension: {out['dimension']}")
        if "cosine" in out:
            print(f"cosine(text 1, text 2): {out['cosine']:.4f}")
        print(
            f"time: {elapsed * 1000:.1f} ms for {len(args.texts)} text(s), {out['threads']} thread(s)"
        )
    return 0


def register(sub: Any) -> None:
    """Add `generate` and `embed`."""
    g = sub.add_parser(
        "generate",
        help="stream an answer to a prompt",
        description="Stream the model's answer to PROMPT on stdout (progress on stderr).",
    )
    g.add_argument(
        "prompt", help="the question or instruction (chat template applied unless --raw)"
    )
    g.add_argument("--model", default="smollm2-135m", help="registry name, .gguf file or HF folder")
    g.add_argument(
        "--max-tokens", type=int, default=128, metavar="N", help="most tokens to generate"
    )
    g.add_argument(
        "--temperature",
        type=float,
        default=0.0,
        metavar="T",
        help="sampling temperature; 0 is greedy",
    )
    g.add_argument(
        "--top-p", type=float, default=1.0, metavar="P", help="nucleus sampling mass, in (0, 1]"
    )
    g.add_argument(
        "--seed",
        type=int,
        default=None,
        help="sampling seed, 0..2**63-1 (default: a fresh random seed per run)",
    )
    g.add_argument(
        "--raw", action="store_true", help="send the prompt as is, without the chat template"
    )
    options.add_mode_arguments(g, "generate")
    add_common(g)
    g.set_defaults(func=cmd_generate)

    e = sub.add_parser(
        "embed",
        help="embed texts; prints the dimension and the cosine of two texts",
        description="Embed TEXTS; prints the dimension and the cosine of the first two.",
    )
    e.add_argument("texts", nargs="+", help="one or more texts")
    e.add_argument("--model", default="minilm-l6", help="registry name or HF folder of an encoder")
    options.add_mode_arguments(e, "embed")
    add_common(e)
    e.set_defaults(func=cmd_embed)
