"""Gumbel-max sampling inside MPC (in-process parties, LocalClient): the noise comes from the
parties' PRF keys, not from the client's seed, and the draws' frequencies follow
softmax(logits / T); top_p < 1 is refused."""

from __future__ import annotations

import pytest
import torch

from privinfer.errors import InputError
from privinfer.models.ops import Sampler
from privinfer.mpc.client import LocalClient
from privinfer.mpc.ops import MpcOps
from privinfer.mpc.runtime import Party, run_local
from privinfer.mpc.shares import share_from

LOGITS = torch.tensor([[2.0, 1.0, 0.5, 0.0, -1.0, -3.0]], dtype=torch.float64)


def _draws(sampler: Sampler, n: int, keys: list[bytes] | None = None) -> list[int]:
    client = LocalClient(16)

    def program(p: Party) -> list[int]:
        ops = MpcOps(p, client)
        x = share_from(p, 0, LOGITS if p.pid == 0 else None, tuple(LOGITS.shape))
        return [ops.next_token(x, sampler, k) for k in range(n)]

    out = run_local(program, keys=keys, timeout_s=120.0)
    assert out[0] == out[1] == out[2]
    return out[0]


def test_noise_follows_the_parties_keys_not_the_client_seed():
    """A client seed used to fix the noise (the client chose it: the leak of issue 14). Now the
    same session keys give the same draws whatever the seed, and fresh keys give fresh draws."""
    keys = [bytes([k]) * 16 for k in (1, 2, 3)]
    other = [bytes([k]) * 16 for k in (4, 5, 6)]
    a = _draws(Sampler(temperature=1.0, seed=7), 24, keys)
    b = _draws(Sampler(temperature=1.0, seed=8), 24, keys)
    c = _draws(Sampler(temperature=1.0, seed=7), 24, other)
    assert a == b
    assert a != c


@pytest.mark.parametrize(("temperature", "n"), [(1.0, 800), (0.5, 400)])
def test_sample_frequencies_follow_softmax(temperature, n):
    draws = torch.tensor(_draws(Sampler(temperature=temperature, seed=11), n))
    freq = torch.bincount(draws, minlength=LOGITS.shape[1]).double() / n
    probs = torch.softmax(LOGITS[0] / temperature, -1)
    # chi-square over the categories with expected count >= 5 (5 dof -> p=0.001 at 20.5)
    keep = probs * n >= 5
    chi2 = (((freq - probs) * n) ** 2 / (probs * n))[keep].sum().item()
    assert chi2 < 20.5, (freq.tolist(), probs.tolist())
    assert (freq - probs).abs().max().item() < 4 * (0.25 / n) ** 0.5  # 4 sigma at p = 1/2


def test_greedy_is_argmax_and_top_p_is_refused():
    assert _draws(Sampler(), 3) == [0, 0, 0]
    client = LocalClient(16)

    def program(p: Party) -> None:
        ops = MpcOps(p, client)
        x = share_from(p, 0, LOGITS if p.pid == 0 else None, tuple(LOGITS.shape))
        ops.next_token(x, Sampler(temperature=1.0, top_p=0.9), 0)

    with pytest.raises(InputError, match="top_p"):
        run_local(program, timeout_s=20.0)
