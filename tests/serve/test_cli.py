"""`privinfer serve` refuses bad arguments before any model loads (exit 2, one sentence naming
the flag), with the modes and flags of the mode plug-ins."""

from __future__ import annotations

import pytest

import privinfer.api
from privinfer import modes
from privinfer.cli.main import build_parser, main

BAD = [
    (("serve", "--port", "70000"), "--port must be between 0 and 65535"),
    (("serve", "--threads", "0"), "--threads must be at least 1"),
    (("serve", "--cluster", "c.toml"), "mode plain does not take --cluster"),
    (("serve", "--mode", "tee", "--cluster", "c.toml"), "mode tee does not take --cluster"),
    (("serve", "--mode", "mpc", "--cluster", "/nonexistent/c.toml"), "--cluster"),
    (("serve", "--mode", "mpc", "--server", "h:1"), "mode mpc does not take --server"),
    (("serve", "--model", "nope"), "nope"),
    (("serve", "--model", "none", "--embed-model", "none"), "nothing to serve"),
    (("tee", "gateway", "--server", "http://127.0.0.1:1", "--port", "-1"), "--port must be"),
]


@pytest.mark.parametrize(("args", "message"), BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_argument_is_one_line_exit_2_before_loading(args, message, monkeypatch, capsys):
    def tripwire(*_a, **_k):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(privinfer.api, "load", tripwire)
    assert main(list(args)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("privinfer: error: ")
    assert message in err and "Traceback" not in err


def test_modes_come_from_the_registry():
    p = build_parser()
    sub = next(a for a in p._actions if a.dest == "command").choices["serve"]
    mode = next(a for a in sub._actions if a.dest == "mode")
    assert tuple(mode.choices) == modes.names()
    flags = {s for a in sub._actions for s in a.option_strings}
    for name in modes.names():
        assert {o.flag for o in modes.get(name).options if o.cli} <= flags


def test_tee_gateway_is_serve_mode_tee_with_a_server(tmp_path, monkeypatch):
    """`privinfer tee gateway --server URL --root PEM` runs the proxy in mode tee (the requests
    then take the tee plug-in's `server=` path, which `serve --mode tee` uses too)."""
    import privinfer.cli.serve as serve_cli
    from privinfer.tee.platform import init_platform

    init_platform(tmp_path / "platform", export_root_to=tmp_path / "root.pem")
    seen = {}
    monkeypatch.setattr(
        serve_cli, "run_proxy", lambda mode, **kw: seen.update(mode=mode, **kw) or 0
    )
    m = "ab" * 48
    argv = [
        "tee",
        "gateway",
        "--server",
        "http://127.0.0.1:9",
        "--root",
        str(tmp_path / "root.pem"),
    ]
    assert main([*argv, "--measurement", m, "--port", "0"]) == 0
    assert seen["mode"] == "tee" and seen["embed_model"] is None and seen["port"] == 0
    assert seen["given"] == {
        "server": "http://127.0.0.1:9",
        "root_cert": str(tmp_path / "root.pem"),
        "measurement": m,
    }


def test_tee_gateway_hands_hardware_trust_to_the_plugin(monkeypatch):
    """`--hardware snp` makes the tee plug-in's root the hardware trust, as for `tee attest`."""
    import privinfer.cli.serve as serve_cli
    from privinfer.tee.attestation import HardwareTrust

    seen = {}
    monkeypatch.setattr(
        serve_cli, "run_proxy", lambda mode, **kw: seen.update(mode=mode, **kw) or 0
    )
    m = "cd" * 48
    argv = ["tee", "gateway", "--server", "http://127.0.0.1:9", "--hardware", "snp"]
    assert main([*argv, "--measurement", m]) == 0
    trust = seen["given"]["root_cert"]
    assert isinstance(trust, HardwareTrust) and trust.evidence_type == "snp"
    assert seen["given"]["measurement"] == m
