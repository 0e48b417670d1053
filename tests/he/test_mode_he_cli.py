"""A real two-process run: `privinfer he serve` in a subprocess, the client here, over TLS."""

import pytest

import privinfer
from privinfer.cli.main import build_parser
from privinfer.errors import InputError
from privinfer.he.server import DEFAULT_MAX_SESSIONS, serve
from privinfer.models.tiny import tiny_llama_config, tiny_llama_weights, write_hf_folder


def test_generate_he_with_server_subprocess_matches_plain(tmp_path):
    cfg = tiny_llama_config()
    folder = write_hf_folder(tmp_path / "tiny", cfg, tiny_llama_weights(cfg, seed=3))
    lm = privinfer.load(str(folder))
    plain = lm.generate("Hi", chat=False, max_new_tokens=1)
    he = lm.generate("Hi", chat=False, max_new_tokens=1, mode="he")
    assert he.token_ids == plain.token_ids
    assert he.stats.new_tokens == 1 and he.stats.prefill_s > 0
    figures = he.stats.details["he"]
    assert figures["rounds"] > 0 and figures["bytes_to_server"] > 1e8
    assert he.stats.costs.by_op["refresh"].rounds == figures["rounds"]


def test_serve_takes_a_session_cap():
    args = build_parser().parse_args(["he", "serve", "--max-sessions", "3"])
    assert args.max_sessions == 3
    assert build_parser().parse_args(["he", "serve"]).max_sessions == DEFAULT_MAX_SESSIONS == 2


def test_serve_refuses_a_cap_below_one():
    with pytest.raises(InputError, match="at least 1"):
        serve(None, None, "127.0.0.1", 0, max_sessions=0)
