"""The `privinfer` command: generate, embed, models, bench, and the per-mode tools (tee, mpc, he).

User errors print one sentence on stderr and exit 2; `--debug` shows the traceback instead.
Prompts and outputs go to stdout only, never to stderr or logs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from privinfer.errors import PrivinferError

EXIT_USER_ERROR = 2


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
    import privinfer

    bar = Progress(f"loading {name}", quiet=args.json)
    bar.start()
    model = privinfer.load(name, threads=args.threads, progress=bar)
    bar.done()
    return model


def cmd_generate(args: argparse.Namespace) -> int:
    from privinfer.api import LanguageModel, set_threads

    if args.mode == "tee" and args.server:
        # The client of a remote enclave needs no weights: it attests, then streams over the channel.
        from privinfer.tee.client_cli import generate_cli

        return generate_cli(args)
    lm = load_model(args.model, args)
    if not isinstance(lm, LanguageModel):
        raise PrivinferError(f"{args.model} is an encoder; use `privinfer embed`")
    opts: dict[str, Any] = {}
    if args.server:
        opts["server"] = args.server
    if getattr(args, "cluster", None):
        opts["cluster"] = args.cluster
    stream = lm.stream(
        args.prompt,
        mode=args.mode,
        chat=not args.raw,
        max_new_tokens=args.max_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        seed=args.seed,
        **opts,
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


def cmd_embed(args: argparse.Namespace) -> int:
    from privinfer.api import EmbeddingModel, peak_rss_mb, set_threads

    em = load_model(args.model, args)
    if not isinstance(em, EmbeddingModel):
        raise PrivinferError(f"{args.model} is a decoder; use `privinfer generate`")
    t0 = time.perf_counter()
    opts: dict[str, Any] = {"server": args.server} if args.server else {}
    if args.cluster:
        opts["cluster"] = args.cluster
    result = em.embed_with_stats(args.texts, mode=args.mode, **opts)
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


def cmd_models(args: argparse.Namespace) -> int:
    from privinfer.models.registry import MODELS, locate

    rows = []
    for spec in MODELS.values():
        p = locate(spec)
        rows.append(
            {
                "name": spec.name,
                "kind": spec.kind,
                "description": spec.description,
                "path": str(p) if p else None,
                "install": spec.install,
            }
        )
    if args.json:
        print(json.dumps(rows))
        return 0
    for r in rows:
        where = r["path"] or f"not installed ({r['install']})"
        print(f"{r['name']:<14} {r['kind']:<6} {r['description']}\n{'':<14} {where}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from privinfer.bench.runner import run_bench

    return run_bench(args)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON object with timings")
    p.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's choice)"
    )
    p.add_argument("--debug", action="store_true", help="show tracebacks")


def build_parser() -> argparse.ArgumentParser:
    from privinfer.modes import names

    KNOWN_MODES = names()

    parser = argparse.ArgumentParser(prog="privinfer", description="Private LLM inference.")
    sub = parser.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="stream an answer to a prompt")
    g.add_argument("prompt")
    g.add_argument("--model", default="smollm2-135m")
    g.add_argument("--mode", default="plain", choices=KNOWN_MODES)
    g.add_argument("--max-tokens", type=int, default=128)
    g.add_argument("--temperature", type=float, default=0.0)
    g.add_argument("--top-p", type=float, default=1.0)
    g.add_argument("--seed", type=int, default=None)
    g.add_argument(
        "--raw", action="store_true", help="send the prompt as is, without the chat template"
    )
    g.add_argument("--server", default=None, help="URL of a running private server (tee, he)")
    g.add_argument("--cluster", default=None, help="cluster file of running MPC parties")
    g.add_argument("--root", default=None, help="tee: PEM of the pinned platform root")
    g.add_argument(
        "--measurement",
        default=None,
        help="tee: expected enclave measurement (hex; default: computed from local code and model)",
    )
    _common(g)
    g.set_defaults(func=cmd_generate)

    e = sub.add_parser(
        "embed", help="embed texts; prints the dimension and the cosine of two texts"
    )
    e.add_argument("texts", nargs="+")
    e.add_argument("--model", default="minilm-l6")
    e.add_argument("--mode", default="plain", choices=KNOWN_MODES)
    e.add_argument("--server", default=None, help="he: address of a running HE server")
    e.add_argument("--cluster", default=None, help="mpc: cluster file of running MPC parties")
    _common(e)
    e.set_defaults(func=cmd_embed)

    m = sub.add_parser("models", help="list known models and where they were found")
    _common(m)
    m.set_defaults(func=cmd_models)

    b = sub.add_parser(
        "bench", help="benchmark workloads across modes, plain baseline in the same run"
    )
    from privinfer.bench.runner import add_arguments as bench_arguments

    bench_arguments(b, KNOWN_MODES)
    _common(b)
    b.set_defaults(func=cmd_bench)

    for register in _extensions():
        register(sub, _common)
    return parser


def _extensions() -> list[Callable[..., None]]:
    """Per-mode subcommands (tee, mpc, he) register themselves when their modules are present."""
    import importlib

    out = []
    for mod in (
        "privinfer.security.report",
        "privinfer.tee.commands",
        "privinfer.mpc.commands",
        "privinfer.he.commands",
    ):
        try:
            out.append(importlib.import_module(mod).register)
        except ModuleNotFoundError as exc:
            if exc.name != mod:
                raise
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except PrivinferError as exc:
        if getattr(args, "debug", False):
            raise
        print(f"privinfer: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("privinfer: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
