"""MpcHeOps and OtLinear in process (two parties as threads over memory links): the linear
backend is exact, a tiny LLaMA picks the plain engine's greedy tokens with logits close to a
float64 reference, only the client learns them, and no weight bytes cross the wire."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tests.views import RecordingLink

from privinfer.engines.plain import PlainOps
from privinfer.models.generate import GenerationStats, generate_ids
from privinfer.models.llama import Llama
from privinfer.models.ops import Sampler
from privinfer.models.tiny import tiny_llama_config, tiny_llama_weights
from privinfer.net.memory import MemoryNetwork
from privinfer.twopc import ring
from privinfer.twopc.engine import MpcHeOps, placeholder_weights
from privinfer.twopc.linear import OtLinear, cost_bytes
from privinfer.twopc.runtime import run_local

PROMPT = [256, 87, 104, 97]
CANARY = -0.0123456789  # encodes to the ring word 0xfffffffffffffcd8 at f = 16


def _matmul_pair(method: str, rows: int, n_in: int, n_out: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = ring.encode(rng.normal(size=(rows, n_in)) * 4, 16)
    w = rng.normal(size=(n_in, n_out))

    def prog(p):  # type: ignore[no-untyped-def]
        s = ring.share_input(p, 1, x.reshape(-1) if p.pid == 1 else None, x.size).reshape(x.shape)
        z = OtLinear(method).matmul(p, s, w if p.pid == 0 else None, n_out)
        return ring.reveal(p, z), p.meter.to_dict()

    (z, costs), _ = run_local(prog)
    return z, x @ ring.encode(w, 16), costs


@pytest.mark.parametrize("method", ["share_bits", "weight_bits"])
def test_ot_linear_is_exact_mod_2_64(method):
    got, want, costs = _matmul_pair(method, rows=3, n_in=10, n_out=5)
    assert np.array_equal(got, want)
    assert costs["linear"]["rounds"] == 1  # online: one flight of the client's masked share
    assert costs["linear"]["bytes_sent"] == 0 and costs["linear"]["bytes_received"] == 8 * 3 * 10
    assert costs["linear/offline"]["rounds"] >= 2


def test_ot_linear_picks_the_cheaper_method():
    assert cost_bytes(1, 64, 256, "share_bits") < cost_bytes(1, 64, 256, "weight_bits")
    assert cost_bytes(300, 8, 4, "weight_bits") < cost_bytes(300, 8, 4, "share_bits")


def _tiny(layers: int = 2):
    cfg = tiny_llama_config(hidden=32, layers=layers, heads=2, kv_heads=1, ffn=64)
    return cfg, tiny_llama_weights(cfg, seed=3)


def _run_tiny(weights, links=None, n_tokens=3, backend=None, layers=2):
    cfg, _ = _tiny(layers)
    shapes = {k: list(v.shape) for k, v in weights.items()}

    def prog(p):  # type: ignore[no-untyped-def]
        ops = MpcHeOps(p, backend() if backend else None)
        m = Llama(cfg, weights if p.pid == 0 else placeholder_weights(shapes), ops)
        cache, ids, pos, toks = m.new_cache(), list(PROMPT), 0, []
        logits = None
        for i in range(n_tokens):
            out = m.forward(ids if p.pid == 1 else [0] * len(ids), cache, pos)
            if i == 0:
                logits = ops.reveal(out)
            tok = ops.next_token(out, Sampler(), i)
            pos, ids = pos + len(ids), [tok]
            toks.append(tok)
        return toks, logits

    return run_local(prog, links=links, timeout_s=120)


def test_tiny_llama_greedy_tokens_equal_plain_and_only_the_client_learns_them():
    cfg, w = _tiny()
    plain = list(
        generate_ids(
            Llama(cfg, w, PlainOps()),
            PROMPT,
            sampler=Sampler(),
            max_new_tokens=3,
            stop_ids=(),
            stats=GenerationStats(),
        )
    )
    ref = Llama(cfg, {k: v.double() for k, v in w.items()}, _Float64Ops())
    ref_logits = ref.forward(PROMPT, ref.new_cache(), 0)
    (server_toks, server_logits), (client_toks, client_logits) = _run_tiny(w)
    assert client_toks == plain
    assert server_toks == [-1, -1, -1] and server_logits.numel() == 0
    assert (client_logits - ref_logits).abs().max().item() < 5e-3


class _Float64Ops(PlainOps):
    def prepare(self, name, weight, *, kind):  # type: ignore[no-untyped-def]
        return weight.detach().to(torch.float64)

    def _rope_tables(self, head_dim, theta, upto):  # type: ignore[no-untyped-def]
        c, s = super()._rope_tables(head_dim, theta, upto)
        return c.double(), s.double()


class _LeakyLinear(OtLinear):
    """A broken backend that sends the owner's encoded weight in the clear (for the companion)."""

    def matmul(self, party, x, weight, out_features):  # type: ignore[no-untyped-def]
        if party.pid == 0:
            party.exchange(ring.encode(weight, party.f).tobytes())
        else:
            party.exchange(b"")
        return super().matmul(party, x, weight, out_features)


def _client_view(backend=None) -> bytes:
    cfg, w = _tiny(layers=1)
    w = dict(w)
    w["model.layers.0.self_attn.q_proj.weight"] = torch.full_like(
        w["model.layers.0.self_attn.q_proj.weight"], CANARY
    )
    w["model.embed_tokens.weight"][:, 0] = CANARY
    net = MemoryNetwork(2, timeout_s=60)
    links = list(net.links)
    links[1] = RecordingLink(links[1])
    _run_tiny(w, links=links, n_tokens=1, backend=backend, layers=1)
    return b"".join(links[1].view)


def test_no_weight_bytes_reach_the_client_and_the_check_catches_a_leak():
    patterns = [
        ring.encode(CANARY, 16).tobytes(),
        np.float64(CANARY).tobytes(),
        np.float32(CANARY).tobytes() * 2,  # q_proj is all canary: a float32 leak repeats it
    ]  # 8-byte patterns: a chance match in a few MB of uniform bytes has probability < 2^-40
    view = _client_view()
    assert len(view) > 10**6
    assert not any(p in view for p in patterns)
    assert patterns[0] in _client_view(_LeakyLinear)


def test_tiny_bert_embedding_matches_plain():
    from tests.he.test_ops import _tiny_bert

    from privinfer.models.bert import Bert

    cfg, w = _tiny_bert(seed=2)
    ids = [1, 7, 23, 5, 2]
    shapes = {k: list(v.shape) for k, v in w.items()}

    def prog(p):  # type: ignore[no-untyped-def]
        ops = MpcHeOps(p, embedding="linear")  # the one-hot product path (the llama tests: lookup)
        m = Bert(cfg, w if p.pid == 0 else placeholder_weights(shapes), ops)
        return ops.reveal(m.encode(ids if p.pid == 1 else [0] * len(ids)))

    server, client = run_local(prog, timeout_s=120)
    plain = Bert(cfg, w, PlainOps()).encode(ids)
    assert server.numel() == 0
    assert torch.nn.functional.cosine_similarity(client.float(), plain).item() > 0.999


def test_tiny_gpt2_greedy_token_equals_plain():
    from privinfer.models import gpt2

    cfg = gpt2.GPT2Config(vocab_size=64, hidden_size=32, n_layers=1, n_heads=2, max_positions=16)
    w = gpt2.random_gpt2_weights(cfg)
    shapes = {k: list(v.shape) for k, v in w.items()}
    ids = [3, 17, 42, 5]
    plain = gpt2.GPT2(cfg, w, PlainOps())
    want = plain.ops.next_token(plain.forward(ids, plain.new_cache(), 0), Sampler(), 0)

    def prog(p):  # type: ignore[no-untyped-def]
        ops = MpcHeOps(p)
        m = gpt2.GPT2(cfg, w if p.pid == 0 else placeholder_weights(shapes), ops)
        out = m.forward(ids if p.pid == 1 else [0] * len(ids), m.new_cache(), 0)
        return ops.next_token(out, Sampler(), 0)

    assert run_local(prog, timeout_s=120) == [-1, want]


def test_ot_lookup_gives_shares_of_the_chosen_rows():
    from privinfer.twopc.lookup import ot_lookup

    table = np.random.default_rng(4).integers(0, 2**63, size=(258, 8), dtype=np.uint64)
    ids = np.array([257, 0, 97, 97])

    def prog(p):  # type: ignore[no-untyped-def]
        got = ot_lookup(p, table if p.pid == 0 else None, ids if p.pid == 1 else None, 4, 258, 8)
        return ring.reveal(p, got), p.meter.to_dict()

    (rows, _), _ = run_local(prog)
    assert np.array_equal(rows, table[ids])


def test_security_report_is_derived_from_the_parameters():
    from privinfer import modes
    from privinfer.twopc.iknp import KAPPA

    mode = modes.get("mpc+he")
    rep = mode.security(None, frac_bits=20)
    assert rep["frac_bits"] == 20 and mode.security(None)["frac_bits"] == 16
    assert rep["computational_security_bits"] == min(KAPPA, 128)
    assert all({"computational", "statistical"} <= set(r) for r in rep["protocols"].values())


def test_sampling_uses_the_servers_noise_scaled_by_the_clients_secret_temperature():
    cfg, w = _tiny()
    ref = Llama(cfg, {k: v.double() for k, v in w.items()}, _Float64Ops())
    ref_logits = ref.forward(PROMPT, ref.new_cache(), 0)[-1]
    top2 = ref_logits.topk(2).values
    assert top2[0] - top2[1] > 0.02  # so that T g (|g| < 37) cannot flip the argmax below
    shapes = {k: list(v.shape) for k, v in w.items()}

    def prog(p):  # type: ignore[no-untyped-def]
        ops = MpcHeOps(p)
        m = Llama(cfg, w if p.pid == 0 else placeholder_weights(shapes), ops)
        out = m.forward(PROMPT if p.pid == 1 else [0] * len(PROMPT), m.new_cache(), 0)
        cold = MpcHeOps(p).next_token(out, Sampler(temperature=1e-4), 0)
        hot_ops = MpcHeOps(p)  # its temperature share is made once, at the first draw
        return cold, [hot_ops.next_token(out, Sampler(temperature=50.0), i) for i in range(3)]

    (s_cold, s_hot), (cold, hot) = run_local(prog, timeout_s=120)
    assert s_cold == -1 and s_hot == [-1, -1, -1]
    assert cold == int(ref_logits.argmax())
    assert all(0 <= t < cfg.vocab_size for t in hot) and len(set(hot)) > 1  # P(fail) ~ 1e-5
