"""`privinfer` itself: exit codes, --debug, --version, and help that shows every default."""

from __future__ import annotations

import argparse
from importlib.metadata import version

import pytest

from privinfer.cli import main as cli_main  # the module
from privinfer.cli import models as cli_models
from privinfer.cli.main import (
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_REJECTED,
    EXIT_USAGE,
    build_parser,
    main,
)


def _subparsers(parser: argparse.ArgumentParser):
    """(name, parser) for every command and subcommand."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield name, sub
                for sub_name, subsub in _subparsers(sub):
                    yield f"{name} {sub_name}", subsub


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"privinfer {version('privinfer')}"


def test_help_documents_exit_codes() -> None:
    text = build_parser().format_help()
    assert "exit codes:" in text
    for code in ("0 ", "1 ", "2 ", "3 ", "130 "):
        assert f"\n  {code}" in text
    assert "--debug adds the traceback" in text


def test_generate_help_shows_each_flag_and_its_default() -> None:
    sub = dict(_subparsers(build_parser()))["generate"]
    text = " ".join(sub.format_help().split())  # unwrap argparse's line breaks
    for flag in ("--model", "--mode", "--max-tokens", "--temperature", "--top-p", "--seed"):
        assert flag in text
    assert "prompt the question or instruction" in text
    for default in (
        "(default: smollm2-135m)",
        "(default: plain)",
        "(default: 128)",
        "(default: 0.0)",
        "(default: 1.0)",
        "(default: a fresh random seed per run)",
        "--threads N torch threads for the model (default: 1)",
    ):
        assert default in text, default


def test_every_flag_of_every_command_has_help_with_its_default() -> None:
    missing = []
    for name, sub in _subparsers(build_parser()):
        for action in sub._actions:
            if not action.option_strings or action.help == argparse.SUPPRESS:
                continue
            if isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
                continue
            shown = sub._get_formatter()._get_help_string(action) or ""
            switch = isinstance(action, argparse._StoreTrueAction) or action.required
            if not shown.strip() or (not switch and "default" not in shown):
                missing.append(f"{name} {action.option_strings[0]}")
    assert not missing, missing


def test_user_error_exits_2_and_debug_keeps_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["generate", "hi", "--max-tokens", "0"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err == "privinfer: error: --max-tokens must be at least 1 (got 0)\n"
    assert main(["generate", "hi", "--max-tokens", "0", "--debug"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "Traceback" in err and err.endswith("--max-tokens must be at least 1 (got 0)\n")


def test_internal_error_exits_1_with_or_without_debug(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def boom(args: argparse.Namespace) -> int:
        raise RuntimeError("a bug")

    monkeypatch.setattr(cli_models, "cmd_models", boom)
    assert main(["models"]) == EXIT_INTERNAL
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "internal error (RuntimeError: a bug)" in err
    assert main(["models", "--debug"]) == EXIT_INTERNAL
    assert "Traceback" in capsys.readouterr().err


def test_interrupt_exits_130(monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(args: argparse.Namespace) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_models, "cmd_models", interrupted)
    assert main(["models"]) == EXIT_INTERRUPTED


def test_argparse_usage_errors_exit_2() -> None:
    with pytest.raises(SystemExit) as exc:
        main(["generate", "hi", "--max-tokens", "many"])
    assert exc.value.code == EXIT_USAGE


def test_rejected_evidence_is_exit_3_wherever_it_is_raised(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`tee attest` (and generate --mode tee) let EvidenceRejected reach main: exit 3."""
    from privinfer.tee import client as tee_client
    from privinfer.tee.claims import EvidenceRejected, Reason, Stage

    class Refusing:
        def __enter__(self) -> Refusing:
            return self

        def __exit__(self, *exc: object) -> None:
            pass

        def attest(self) -> None:
            raise EvidenceRejected(Stage.POLICY, Reason.MEASUREMENT_NOT_ALLOWED)

    monkeypatch.setattr(tee_client, "client_for", lambda *a, **k: Refusing())
    assert main(["tee", "attest", "--server", "http://127.0.0.1:1"]) == EXIT_REJECTED
    err = capsys.readouterr().err
    assert err.startswith("privinfer: error: evidence rejected at policy") and err.count("\n") == 1
    assert cli_main.EXIT_REJECTED == 3
