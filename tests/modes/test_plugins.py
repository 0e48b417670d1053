"""Modes are plug-ins: each registered mode is complete, options are refused in one shape, and a
new mode is one file plus one registry line that the API, CLI, security report and threat
document then reach with no other edit."""

from __future__ import annotations

import json
import re
import sys
import textwrap

import pytest

import privinfer
from privinfer import modes
from privinfer.cli.main import main as cli_main
from privinfer.models.tiny import tiny_llama_config, tiny_llama_weights, write_hf_folder
from privinfer.modes import OptionError
from privinfer.security.matrix import ADVERSARIES, ASSETS


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    cfg = tiny_llama_config()
    folder = write_hf_folder(tmp_path_factory.mktemp("tiny"), cfg, tiny_llama_weights(cfg, seed=5))
    return folder, privinfer.load(str(folder))


@pytest.mark.parametrize("name", modes.names())
def test_every_registered_mode_is_a_complete_plugin(name):
    mode = modes.get(name)
    assert mode.name == name and mode.summary and mode.leakage
    assert mode.tasks and mode.tasks <= modes.TASKS
    assert set(mode.threat) == set(ADVERSARIES)
    assert all(set(row) == set(ASSETS) for row in mode.threat.values())
    assert "generate" in mode.bench_workloads or not mode.tasks & {"generate"}
    flags = [o.flag for o in mode.options]
    assert len(flags) == len(set(flags)) and all(f.startswith("--") for f in flags)


@pytest.mark.parametrize("name", modes.names())
def test_an_option_of_another_mode_is_refused_in_one_shape(name):
    mode = modes.get(name)
    mine = {o.name for o in mode.options_for("generate")}
    others = [
        o for m in modes.names() for o in modes.get(m).options if o.name not in mine and o.cli
    ]
    if "generate" not in mode.tasks:
        pytest.skip(f"mode {name} does not generate")
    for o in others:
        with pytest.raises(
            OptionError,
            match=rf"^mode {re.escape(name)} does not take {o.flag} \(mode {re.escape(name)} takes",
        ):
            mode.check_options("generate", {o.name: o.default})
    with pytest.raises(OptionError, match=r"^unknown option 'max_tokens'"):
        mode.check_options("generate", {"max_tokens": 3})


def test_api_refuses_bad_options_and_settings_before_running(tiny):
    _, lm = tiny
    cases = [
        (dict(mode="tee", cluster="c.toml"), "mode tee does not take --cluster"),
        (dict(mode="plain", max_tokens=3), "unknown option 'max_tokens'"),
        (dict(mode="mpc", timeout_s=float("nan")), "--timeout-s must be a finite number"),
        (dict(mode="mpc", connect_timeout_s=-1.0), "--connect-timeout-s must be greater than 0"),
        (dict(temperature=float("nan")), "--temperature must be a finite number"),
        (dict(seed=2**70), "--seed must be between 0 and"),
        (dict(top_p=0.0), "--top-p must be a number in"),
        (dict(max_new_tokens=0), "--max-tokens must be at least 1"),
    ]
    for kwargs, message in cases:
        with pytest.raises(privinfer.PrivinferError, match=message):
            lm.generate("hi", chat=False, **kwargs)
    with pytest.raises(OptionError, match="mode tee does not support embeddings"):
        modes.get("tee").check_options("embed", {})


ECHO_MODE = '''
"""A test mode: plain's engine under another name, with one option of its own."""

from privinfer.modes import Mode, Option
from privinfer.modes.plain import MODE as PLAIN
from privinfer.security.matrix import ADVERSARIES, ASSETS, Cell


class EchoMode(Mode):
    name = "echo"
    summary = "plain, renamed"
    tasks = frozenset({"generate"})
    options = (Option("shout", bool, False, "upper-case nothing (a test option)"),)
    leakage = ("everything",)
    threat = {a: {x: Cell("no", "echo protects nothing") for x in ASSETS} for a in ADVERSARIES}
    bench_workloads = ("generate",)

    def generate(self, model, req, stats, *, shout=False):
        stats.details["echo"] = {"shout": shout}
        return PLAIN.generate(model, req, stats)


MODE = EchoMode()
'''


def test_a_new_mode_is_one_file_and_one_registry_line(tiny, tmp_path, monkeypatch, capsys):
    folder, lm = tiny
    (tmp_path / "echo_mode.py").write_text(textwrap.dedent(ECHO_MODE))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(modes.REGISTRY, "echo", "echo_mode")
    try:
        plain = lm.generate("hello", chat=False, max_new_tokens=3)
        echo = lm.generate("hello", chat=False, max_new_tokens=3, mode="echo", shout=True)
        assert echo.token_ids == plain.token_ids and echo.stats.details["echo"] == {"shout": True}

        argv = ["generate", "hello", "--model", str(folder), "--raw", "--max-tokens", "3"]
        assert cli_main([*argv, "--mode", "echo", "--shout", "--json"]) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["mode"] == "echo" and out["token_ids"] == plain.token_ids
        assert out["echo"] == {"shout": True}
        assert cli_main([*argv, "--mode", "plain", "--shout"]) == 2
        assert "mode plain does not take --shout" in capsys.readouterr().err

        assert cli_main(["security", "--mode", "echo", "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["threat_matrix"]["host operator"]["prompt"]["mechanism"] == (
            "echo protects nothing"
        )

        from privinfer.modes.threat_doc import render

        assert "\n## echo\n" in render()
    finally:
        sys.modules.pop("echo_mode", None)
