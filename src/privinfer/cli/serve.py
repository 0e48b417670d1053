"""`privinfer serve --mode MODE`: the local OpenAI-compatible proxy (see docs/proxy.md).

The modes and their flags come from the mode plug-ins (`privinfer.modes.REGISTRY`), as for
`privinfer generate`. Every argument is checked before a model loads. The proxy prints its URL
on stderr once it listens; SIGTERM and SIGINT stop it and everything it started (a local
enclave, local parties), through the plug-ins' `services` contexts.
"""

from __future__ import annotations

import argparse
import signal
import socket
import sys
from typing import Any

from privinfer import modes
from privinfer.cli import options
from privinfer.cli.main import add_common
from privinfer.errors import InputError

TASKS = ("generate", "embed")


def add_serve_mode_arguments(p: argparse.ArgumentParser) -> None:
    """--mode and the flags of every mode option some mode takes for generation or embedding."""
    options.add_mode_arguments(p, "generate")
    have = {o.name for o in options.all_options() if "generate" in o.tasks}
    for opt in options.all_options():
        if opt.name in have or "embed" not in opt.tasks:
            continue
        where = "mode " + ", ".join(options.modes_taking(opt.name, "embed"))
        if opt.type is bool:
            p.add_argument(
                opt.flag, dest=opt.name, action="store_true", help=f"{opt.help} ({where})"
            )
        else:
            p.add_argument(opt.flag, dest=opt.name, default=None, help=f"{opt.help} ({where})")


def serve_options(args: argparse.Namespace) -> dict[str, Any]:
    """The mode options typed on the command line, checked by the mode for each task it has
    (an option it does not take is refused naming the flag; files named must exist)."""
    mode = modes.get(args.mode)
    given: dict[str, Any] = {}
    for task in TASKS:
        if task in mode.tasks:
            options.mode_options(args, task)
            given.update(options.given_mode_options(args, task))
    return given


def check_serve(args: argparse.Namespace) -> dict[str, Any]:
    options.check_threads(args)
    if not 0 <= args.port <= 65535:
        raise InputError(f"--port must be between 0 and 65535 (got {args.port})")
    opts = serve_options(args)
    mode = modes.get(args.mode)
    model = args.model if "generate" in mode.tasks and args.model != "none" else None
    embed = args.embed_model if "embed" in mode.tasks and args.embed_model != "none" else None
    if model is None and embed is None:
        raise InputError(f"mode {args.mode} has nothing to serve: give --model or --embed-model")
    for name in (model, embed):
        if name is not None:
            options.check_model(name)
    args.model, args.embed_model = model, embed
    return opts


class _Terminated(SystemExit):
    """SIGTERM: unwind like Ctrl-C so every context (local enclave, parties) stops."""


def _on_sigterm(_signum: int, _frame: Any) -> None:
    raise _Terminated(0)


def run_proxy(
    mode: str,
    *,
    model: str | None,
    embed_model: str | None,
    given: dict[str, Any],
    host: str,
    port: int,
    threads: int,
) -> int:
    """Start the proxy and serve until SIGTERM / SIGINT (a `privinfer tee gateway` runs here too)."""
    import uvicorn

    from privinfer.serve.app import create_app
    from privinfer.serve.backend import open_backend

    signal.signal(signal.SIGTERM, _on_sigterm)
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        raise InputError(f"cannot listen on {host}:{port} ({exc.strerror})") from None
    bound = sock.getsockname()[1]

    def note(msg: str) -> None:
        print(f"privinfer serve: {msg}", file=sys.stderr, flush=True)

    with (
        sock,
        open_backend(
            mode, model=model, embed_model=embed_model, options=given, threads=threads, log=note
        ) as backend,
    ):
        app = create_app(backend)
        url = f"http://{host if ':' not in host else f'[{host}]'}:{bound}"

        async def announce() -> None:
            note(f"mode {mode}, models {', '.join(backend.model_ids())}")
            print(f"privinfer serve: listening on {url} (OpenAI API at {url}/v1)", flush=True)

        app.router.on_startup.append(announce)
        config = uvicorn.Config(
            app, log_level="warning", access_log=False, timeout_graceful_shutdown=5
        )
        server = uvicorn.Server(config)
        try:
            server.run(sockets=[sock])
        finally:
            note("stopping (and everything it started)")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    given = check_serve(args)
    return run_proxy(
        args.mode,
        model=args.model,
        embed_model=args.embed_model,
        given=given,
        host=args.host,
        port=args.port,
        threads=args.threads,
    )


def register(sub: Any) -> None:
    """Add `privinfer serve`."""
    p = sub.add_parser(
        "serve",
        help="local OpenAI-compatible proxy that runs requests in a private mode",
        description="Serve the OpenAI API (chat, completions, embeddings, models) and a chat "
        "page on HOST:PORT; each request runs through the chosen mode's plug-in, which does the "
        "client's part (attestation, secret sharing, the CKKS key). See docs/proxy.md.",
    )
    p.add_argument(
        "--model",
        default="smollm2-135m",
        help="chat model: registry name, .gguf or HF folder ('none': no chat)",
    )
    p.add_argument(
        "--embed-model",
        default="minilm-l6",
        help="embedding model for modes that embed ('none': no /v1/embeddings)",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, default=8480, help="port to listen on (0: any free port)")
    add_serve_mode_arguments(p)
    add_common(p)
    p.set_defaults(func=cmd_serve)
