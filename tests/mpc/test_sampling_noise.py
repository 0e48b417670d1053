"""The MPC sampling noise is the parties', not the client's (issue 14, finding 2).

A client that could choose its own Gumbel vector (a very negative value everywhere except two
tokens with chosen offsets) learned from each revealed token whether logit_i > logit_j + delta,
and by binary search the difference. The only sampling input a client now sends is its
temperature, which the parties clamp to [0, T_MAX]; the tests below play that client (in-process
parties, real protocol messages) and check that what it crafts has no effect on the distribution
of the revealed tokens, and that the parties' noise is Gumbel(0, 1) within the stated error."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from privinfer.models.ops import Sampler
from privinfer.mpc.client import LocalClient
from privinfer.mpc.ops import MpcOps
from privinfer.mpc.protocols.gumbel import MAX_ABS_ERROR, exact_gumbel, gumbel_from
from privinfer.mpc.runtime import Party, run_local
from privinfer.mpc.shares import RShare, client_make_shares, reveal, reveal_ring, share_from

LOGITS = torch.tensor([[2.0, 1.0, 0.5, 0.0, -1.0, -3.0]], dtype=torch.float64)
KEYS = [bytes([k]) * 16 for k in (5, 6, 7)]  # fixed PRF keys: every run here is deterministic
FLOOR = -1000.0  # the crafted "minus infinity"


class CraftingClient(LocalClient):
    """A client that crafts every sampling input it is asked for: the noise vector (the port of
    the code before the fix asked for one) and the temperature share (a raw ring value)."""

    def __init__(self, delta: float, temperature_ring: int | None = None) -> None:
        super().__init__(16)
        self.delta = delta
        self.temperature_ring = temperature_ring

    def sampling_noise(self, party_id: int, vocab: int, frac_bits: int, sampler: Sampler) -> bytes:
        noise = torch.full((vocab,), FLOOR, dtype=torch.float64)
        noise[0], noise[1] = 0.0, self.delta
        with self._lock:
            if "noise" not in self.__dict__:
                self.__dict__["noise"] = client_make_shares(noise, frac_bits)
            return self.__dict__["noise"][party_id]

    def sampling_temperature(self, party_id: int, frac_bits: int, sampler: Sampler) -> bytes:
        if self.temperature_ring is None:
            return super().sampling_temperature(party_id, frac_bits, sampler)
        with self._lock:
            if "temp" not in self.__dict__:
                t = torch.tensor([self.temperature_ring], dtype=torch.int64)
                self.__dict__["temp"] = _ring_shares(t)
            return self.__dict__["temp"][party_id]


def _ring_shares(t: torch.Tensor) -> list[bytes]:
    from privinfer.mpc.ring import bits_to_bytes

    r0, r1 = torch.randint(-(2**62), 2**62, (2, *t.shape), dtype=torch.int64)
    comps = (r0, r1, t - r0 - r1)
    return [bits_to_bytes(torch.stack((comps[i], comps[(i + 1) % 3]))) for i in range(3)]


def _draws(client: LocalClient, sampler: Sampler, n: int, keys: list[bytes] = KEYS) -> list[int]:
    def program(p: Party) -> list[int]:
        ops = MpcOps(p, client)
        x = share_from(p, 0, LOGITS if p.pid == 0 else None, tuple(LOGITS.shape))
        return [ops.next_token(x, sampler, k) for k in range(n)]

    out = run_local(program, keys=keys, timeout_s=300.0)
    assert out[0] == out[1] == out[2]
    return out[0]


def _chi2(draws: list[int], probs: torch.Tensor) -> float:
    n = len(draws)
    freq = torch.bincount(torch.tensor(draws), minlength=probs.numel()).double()
    keep = probs * n >= 5
    return ((((freq - probs * n) ** 2) / (probs * n))[keep]).sum().item()


def test_comparison_oracle_learns_nothing():
    """The attack of the finding: binary search on delta for logit_0 - logit_1 (= 1.0). With
    client noise each answer was the exact comparison and 14 queries gave the difference to
    1e-3; with the parties' noise the answers are samples and the crafted offsets and floor have
    no effect."""
    lo, hi = -8.0, 8.0
    sampler = Sampler(temperature=1.0)
    for q in range(14):
        mid = (lo + hi) / 2
        (tok,) = _draws(
            CraftingClient(mid), sampler, 1, keys=[bytes([q, k]) * 8 for k in (1, 2, 3)]
        )
        if tok == 0:  # "logit_0 > logit_1 + mid"
            lo = mid
        else:
            hi = mid
    assert abs((lo + hi) / 2 - 1.0) > 1e-3  # a coin-flip search cannot land there (p ~ 2^-10)
    probs = torch.softmax(LOGITS[0], -1)
    for delta in (-0.5, 1.5):  # before the fix: always token 0, always token 1
        draws = _draws(CraftingClient(delta), sampler, 300)
        assert set(draws) - {0, 1}, "the crafted floor suppressed the other tokens"
        assert _chi2(draws, probs) < 20.5, (delta, np.bincount(draws, minlength=6))  # 5 dof, p=.001


@pytest.mark.parametrize(
    ("ring", "expect"),
    [
        (-5 << 20, "greedy"),  # T = -5 -> clamped to 0
        (-(2**63), "greedy"),  # the most negative ring value
        (1 << 60, "uniform"),  # T = 2^40 -> clamped to T_MAX = 16384
    ],
)
def test_crafted_temperature_is_clamped(ring, expect):
    draws = _draws(CraftingClient(0.0, temperature_ring=ring), Sampler(temperature=1.0), 240)
    if expect == "greedy":
        assert set(draws) == {0}
    else:
        uniform = torch.full((6,), 1 / 6, dtype=torch.float64)
        assert _chi2(draws, uniform) < 20.5, np.bincount(draws, minlength=6)


def test_party_noise_is_gumbel_within_the_stated_error():
    """2^17 draws: |g - (-ln(-ln u))| <= MAX_ABS_ERROR for the u of the (test-opened) ring
    values, and the values follow the Gumbel CDF (Kolmogorov-Smirnov)."""
    n = 1 << 17

    def program(p: Party) -> tuple[torch.Tensor, torch.Tensor]:
        a, b = p.rand.random_replicated((n,))
        r = RShare(a, b, p.pid, 0)
        g = gumbel_from(p, r)
        return reveal_ring(p, r), reveal(p, g)

    r, g = run_local(program, keys=KEYS, timeout_s=300.0)[0]
    err = (g.double() - exact_gumbel(r)).abs().max().item()
    assert err <= MAX_ABS_ERROR, err
    x = np.sort(g.double().numpy())
    cdf = np.exp(-np.exp(-x))
    ks = np.max(np.maximum(np.arange(1, n + 1) / n - cdf, cdf - np.arange(n) / n))
    assert ks < 1.95 / math.sqrt(n)  # p = 0.001


def test_mode_refuses_a_seed_with_sampling_and_states_the_exact_claim():
    from privinfer.errors import InputError
    from privinfer.models.generate import GenerationStats
    from privinfer.modes import Request
    from privinfer.modes.mpc import MpcMode
    from privinfer.mpc.protocols.gumbel import T_MAX, sampling_security

    req = Request([1, 2], Sampler(temperature=0.7, seed=3), 2)
    with pytest.raises(InputError, match="--seed is not supported with sampling in mode mpc"):
        next(iter(MpcMode().generate(None, req, GenerationStats())))
    # the threat matrix's client row quotes the code's constants
    cell = MpcMode.threat["the client"]["weights"].mechanism
    tv = sampling_security(49152)["per_temperature"]["T=1"]["tv_distance_per_token"]
    assert f"[0, {T_MAX:g}]" in cell and f"{tv:.2g}" in cell, (cell, tv)
    assert any(f"[0, {T_MAX:g}]" in item for item in MpcMode.leakage)


@pytest.mark.parametrize("frac_bits", [16, 24])
def test_sampling_runs_at_any_fraction_bits(frac_bits):
    """The logits are lifted to max(f, 20) bits before the noise is added (f = 24 keeps f)."""
    client = LocalClient(frac_bits)
    peaked = torch.tensor([[0.0, 9.0, 0.0, 0.0]], dtype=torch.float64)

    def program(p: Party) -> list[int]:
        ops = MpcOps(p, client)
        x = share_from(p, 0, peaked if p.pid == 0 else None, tuple(peaked.shape))
        return [ops.next_token(x, Sampler(temperature=0.5), k) for k in range(8)]

    out = run_local(program, frac_bits=frac_bits, keys=KEYS, timeout_s=120.0)
    assert out[0] == [1] * 8  # p(1) = 1 - 3 e^-18


class InconsistentTemperatureClient(LocalClient):
    """Hands party 0 a different copy of component x_1 than party 1 gets (both hold x_1)."""

    def sampling_temperature(self, party_id: int, frac_bits: int, sampler: Sampler) -> bytes:
        from privinfer.mpc.ring import bits_to_bytes

        with self._lock:
            if "temp" not in self.__dict__:
                t = torch.tensor([1 << frac_bits], dtype=torch.int64)
                r0, r1 = torch.tensor([11]), torch.tensor([22])
                comps = (r0, r1, t - r0 - r1)
                payloads = [
                    bits_to_bytes(torch.stack((comps[i], comps[(i + 1) % 3]))) for i in range(3)
                ]
                payloads[0] = bits_to_bytes(torch.stack((comps[0], comps[1] + 7)))
                self.__dict__["temp"] = payloads
            return self.__dict__["temp"][party_id]


def test_inconsistent_temperature_copies_are_refused():
    """Every component of the temperature sharing is tagged by both parties that hold it; a
    client that gives them different copies (which would run the clamp and the noise on
    inconsistent shares) is refused before any noise is drawn."""
    from privinfer.mpc.protocols.onehot import InputCheckError

    with pytest.raises(Exception) as info:
        _draws(InconsistentTemperatureClient(16), Sampler(temperature=1.0), 1)
    errs = [info.value, *getattr(info.value, "exceptions", ())]
    assert any(isinstance(e, InputCheckError) or "differ between parties" in str(e) for e in errs)
