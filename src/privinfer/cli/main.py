"""The `privinfer` command: the parser, the entry point, errors and exit codes.

Every command group registers itself from its own module (generate, serve, models, bench,
security, tee, mpc, he). Arguments are checked before any model loads; a user error prints one sentence on
stderr. Prompts and outputs go to stdout only, never to stderr or logs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from privinfer.errors import PrivinferError

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_REJECTED = 3
EXIT_INTERRUPTED = 130

# One torch thread: on a machine whose other cores are busy, two threads collapse (a decode step
# waits for the slower thread) while one stays steady; README "Threads" has the measurements.
DEFAULT_THREADS = 1

EPILOG = f"""\
exit codes:
  {EXIT_OK}    success
  {EXIT_INTERNAL}    internal error (a bug: rerun with --debug and report the traceback)
  {EXIT_USAGE}    usage or input error (one sentence on stderr)
  {EXIT_REJECTED}    attestation or evidence verification rejected (tee verify, tee attest,
       generate --mode tee)
  {EXIT_INTERRUPTED}  interrupted (Ctrl-C)
--debug adds the traceback to an error; it never changes the exit code."""


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the epilog's lines and appends "(default: X)" to every option that has a default.

    Options whose default is None or False (a switch) say in their own help text what happens
    when they are left out.
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "default" in text or action.default is None or action.default is False:
            return text
        if action.default == argparse.SUPPRESS:
            return text
        if not action.option_strings and action.nargs not in ("?", "*"):
            return text
        return f"{text} (default: %(default)s)"


class Parser(argparse.ArgumentParser):
    """ArgumentParser whose subcommand parsers share the help formatter."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)


def add_common(p: argparse.ArgumentParser, *, threads: bool = True) -> None:
    """--json and --debug on every command; --threads where the command runs a model."""
    p.add_argument("--json", action="store_true", help="print one JSON object (with timings)")
    if threads:
        p.add_argument(
            "--threads",
            type=int,
            default=DEFAULT_THREADS,
            metavar="N",
            help="torch threads for the model",
        )
    p.add_argument(
        "--debug", action="store_true", help="add the traceback to an error (same exit code)"
    )


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("privinfer")
    except PackageNotFoundError:  # a source tree that was never installed
        import privinfer

        return privinfer.__version__


def build_parser() -> argparse.ArgumentParser:
    """The whole `privinfer` parser, every command group included."""
    from privinfer.cli import (
        bench,
        generate,
        he,
        models,
        mpc,
        mpc_he,
        security,
        serve,
        tee,
        tee_he,
    )

    parser = Parser(prog="privinfer", description="Private LLM inference.", epilog=EPILOG)
    parser.add_argument("--version", action="version", version=f"privinfer {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in (generate, serve, models, bench, security, tee, mpc, he, tee_he, mpc_he):
        group.register(sub)
    return parser


def _rejected() -> type[Exception]:
    from privinfer.tee.claims import EvidenceRejected

    return EvidenceRejected


def error(message: str) -> None:
    """Print a user error the way every command does: one line on stderr."""
    print(f"privinfer: error: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `privinfer` command; return its exit code (see EPILOG)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = bool(getattr(args, "debug", False))
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("privinfer: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_OK
    except Exception as exc:
        code = (
            EXIT_REJECTED
            if isinstance(exc, _rejected())
            else EXIT_USAGE
            if isinstance(exc, PrivinferError)
            else EXIT_INTERNAL
        )
        if debug:
            import traceback

            traceback.print_exc()
        if code == EXIT_INTERNAL:
            hint = "" if debug else "; rerun with --debug for the traceback"
            error(f"internal error ({type(exc).__name__}: {exc}){hint}")
        else:
            error(str(exc))
        return code


if __name__ == "__main__":
    sys.exit(main())
