"""Base OT, IKNP and the derandomised OTs: correctness, and the views (receiver's independent of
the unchosen messages, sender's of the choice bits) by a two-sample chi-square test on byte
histograms (255 dof, alpha 1e-3 / 4 each), with a companion test that the statistic catches a
deliberate leak. Randomness is the OS CSPRNG: each view test fails by chance with p < 2.5e-4."""

from __future__ import annotations

import numpy as np
from tests.twopc.helpers import (
    CHI2_CRIT_255_DOF_1E3,
    CHI2_CRIT_255_DOF_1E3_OVER_4,
    RecordingLink,
    byte_hist,
    chi2_two_sample,
)

from privinfer.net.memory import MemoryNetwork
from privinfer.twopc import ot
from privinfer.twopc.baseot import BaseOTReceiver, BaseOTSender, random_choice_bits
from privinfer.twopc.iknp import transpose_bits, transpose_bits_reference
from privinfer.twopc.runtime import run_local

RNG = np.random.default_rng(7)


def test_base_ot_gives_the_chosen_key_only():
    sender, choices = BaseOTSender(), random_choice_bits(128)
    receiver = BaseOTReceiver(choices)
    k0, k1 = sender.keys(receiver.reply(sender.first_message()), 128)
    got = receiver.keys()
    c = choices[:, None].astype(bool)
    assert np.array_equal(got, np.where(c, k1, k0))
    assert not np.any(np.all(got == np.where(c, k0, k1), axis=1))


def test_bit_transpose_matches_the_reference():
    cols = RNG.integers(0, 256, (128, 64), dtype=np.uint8)
    assert np.array_equal(transpose_bits(cols), transpose_bits_reference(cols))


def test_chosen_correlated_and_1_of_16_ot():
    n = 3000
    msgs = [RNG.integers(0, 2**64, (n, 2), dtype=np.uint64) for _ in range(2)]
    ch = [RNG.integers(0, 2, n).astype(np.uint8) for _ in range(2)]
    table = RNG.integers(0, 4, (n, 16)).astype(np.uint8)
    idx = RNG.integers(0, 16, n)

    def prog(p):  # type: ignore[no-untyped-def]
        got = ot.choose(p, n, n, msgs[p.pid], ch[p.pid])
        cm = ot.cot_mul(p, n, n, msgs[p.pid][:, 0], ch[p.pid])
        t, i = (table, None) if p.pid == 0 else (None, idx)
        return got, cm, ot.choose_n(p, 0, n, 4, 2, t, i)

    a, b = run_local(prog)
    assert np.array_equal(a[0], msgs[1][np.arange(n), ch[0]])
    assert np.array_equal(b[0], msgs[0][np.arange(n), ch[1]])
    assert np.array_equal(a[1][0] + b[1][1], msgs[0][:, 0] * ch[1].astype(np.uint64))
    assert np.array_equal(b[1][0] + a[1][1], msgs[1][:, 0] * ch[0].astype(np.uint64))
    assert a[2] is None and np.array_equal(b[2], table[np.arange(n), idx])


N_VIEW = 20000


def _ot_views(unchosen: int, choice: int, leak: str = "") -> tuple[bytes, bytes]:
    """(sender's view, receiver's view) of N_VIEW chosen-message OTs, party 0 sending; the
    receiver always chooses `choice` and the unchosen message is the constant `unchosen`."""
    chosen = RNG.integers(0, 2**64, N_VIEW, dtype=np.uint64)
    other = np.full(N_VIEW, unchosen, dtype=np.uint64)
    msgs = np.stack([chosen, other] if choice == 0 else [other, chosen], axis=1)
    choices = np.full(N_VIEW, choice, np.uint8)
    net = MemoryNetwork(2, timeout_s=30)
    links = [RecordingLink(link) for link in net.links]
    marks = [0, 0]

    def prog(p):  # type: ignore[no-untyped-def]
        p.ot.reserve(N_VIEW, 0)
        marks[p.pid] = len(links[p.pid].view)  # views of the OT itself, after the extension
        if leak == "choices" and p.pid == 1:
            p.exchange(np.packbits(choices))  # a broken receiver: sends its choices in clear
            p.exchange(b"")
            return None
        if leak == "messages" and p.pid == 0:
            p.exchange(b"")
            p.exchange(msgs)  # a broken sender: sends both messages unmasked
            return None
        if p.pid == 0:
            return ot.choose(p, N_VIEW, 0, msgs, np.zeros(0, np.uint8))
        return ot.choose(p, N_VIEW, 0, np.zeros((0, 2), np.uint64), choices)

    out = run_local(prog, links=links)
    if not leak:
        assert np.array_equal(out[1], chosen)
    return tuple(b"".join(links[i].view[marks[i] :]) for i in (0, 1))  # type: ignore[return-value]


def test_receiver_view_is_independent_of_the_unchosen_messages():
    _, view_a = _ot_views(unchosen=0, choice=0)
    _, view_b = _ot_views(unchosen=2**64 - 1, choice=0)
    assert chi2_two_sample(byte_hist(view_a), byte_hist(view_b)) < CHI2_CRIT_255_DOF_1E3_OVER_4


def test_sender_view_is_independent_of_the_choice_bits():
    view_a, _ = _ot_views(unchosen=5, choice=0)
    view_b, _ = _ot_views(unchosen=5, choice=1)
    assert chi2_two_sample(byte_hist(view_a), byte_hist(view_b)) < CHI2_CRIT_255_DOF_1E3_OVER_4


def test_the_statistic_catches_a_leak():
    _, leak_a = _ot_views(unchosen=0, choice=0, leak="messages")
    _, leak_b = _ot_views(unchosen=2**64 - 1, choice=0, leak="messages")
    assert chi2_two_sample(byte_hist(leak_a), byte_hist(leak_b)) > CHI2_CRIT_255_DOF_1E3
    s_a, _ = _ot_views(unchosen=5, choice=0, leak="choices")
    s_b, _ = _ot_views(unchosen=5, choice=1, leak="choices")
    assert chi2_two_sample(byte_hist(s_a), byte_hist(s_b)) > CHI2_CRIT_255_DOF_1E3


def test_iknp_rows_are_delta_correlated():
    from privinfer.twopc.iknp import IknpReceiver, IknpSender

    delta = random_choice_bits(128)
    base_s, base_r = BaseOTSender(), BaseOTReceiver(delta)
    k0, k1 = base_s.keys(base_r.reply(base_s.first_message()), 128)
    sender, receiver = IknpSender(delta, base_r.keys()), IknpReceiver(k0, k1)
    r = random_choice_bits(1024)
    u, t = receiver.correlated(1024, r)
    q = sender.correlated(1024, u)
    assert np.array_equal(q ^ t, np.where(r[:, None] == 1, sender.delta, 0).astype(np.uint8))
    assert not np.array_equal(q, t)
