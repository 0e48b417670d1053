"""The client's side of MPC inference: shares private inputs (token one-hots) and reconstructs
outputs; the in-process `LocalClient` serves tests and dry runs (it shares one process with the
parties, so it proves nothing about isolation; the protocol messages are the real ones).

A `ClientPort` is what `MpcOps` calls: `token_input` returns this party's payload of the
client's one-hot shares (deployments ignore the `ids` argument, which parties never see), and
`output` hands this party's reveal payload to the client; `sampling_noise` returns this party's
payload of the client's shared Gumbel noise (scaled by the temperature) for one sampling step.
In the in-process harness `output` returns the reconstructed value so that one decoding loop can
drive all parties; a deployed port returns None and the client alone learns the value.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import Protocol

import torch

from privinfer.models.ops import Sampler
from privinfer.mpc.runtime import N_PARTIES
from privinfer.mpc.shares import client_make_shares, client_reconstruct


class ClientPort(Protocol):
    def token_input(self, party_id: int, ids: Sequence[int], vocab: int) -> bytes: ...

    def output(
        self, party_id: int, payload: bytes, shape: tuple[int, ...], frac_bits: int
    ) -> torch.Tensor | None: ...

    def sampling_noise(
        self, party_id: int, vocab: int, frac_bits: int, sampler: Sampler
    ) -> bytes: ...


def gumbel_noise(vocab: int, temperature: float, generator: torch.Generator) -> torch.Tensor:
    """T * g with g ~ Gumbel(0, 1), float64 [vocab]; u is kept in [2^-53, 1 - 2^-53] so that
    |g| <= 37.4 and the noise stays far inside the fixed-point range."""
    u = torch.rand(vocab, generator=generator, dtype=torch.float64).clamp(2.0**-53, 1 - 2.0**-53)
    return -torch.log(-torch.log(u)) * temperature


def sampling_generator(sampler: Sampler) -> torch.Generator:
    """The client's noise source: seeded when the sampler has a seed (reproducible), else fresh."""
    g = torch.Generator()
    if sampler.seed is not None:
        g.manual_seed(int(sampler.seed))
    else:
        g.manual_seed(int.from_bytes(os.urandom(8), "little") >> 1)
    return g


class LocalClient:
    """Thread-safe in-process client for three party threads."""

    def __init__(self, frac_bits: int) -> None:
        self.frac_bits = frac_bits
        self._lock = threading.Condition()
        self._inputs: dict[int, list[bytes]] = {}
        self._input_calls = [0] * N_PARTIES
        self._outputs: dict[int, list[bytes | None]] = {}
        self._results: dict[int, torch.Tensor] = {}
        self._output_calls = [0] * N_PARTIES
        self._noise: dict[int, list[bytes]] = {}
        self._noise_calls = [0] * N_PARTIES
        self._noise_gen: torch.Generator | None = None

    def token_input(self, party_id: int, ids: Sequence[int], vocab: int) -> bytes:
        with self._lock:
            k = self._input_calls[party_id]
            self._input_calls[party_id] += 1
            if k not in self._inputs:
                onehot = torch.zeros(len(ids), vocab, dtype=torch.float64)
                onehot[torch.arange(len(ids)), torch.as_tensor(list(ids))] = 1.0
                self._inputs[k] = client_make_shares(onehot, 0)
            return self._inputs[k][party_id]

    def output(
        self, party_id: int, payload: bytes, shape: tuple[int, ...], frac_bits: int
    ) -> torch.Tensor:
        with self._lock:
            k = self._output_calls[party_id]
            self._output_calls[party_id] += 1
            slot = self._outputs.setdefault(k, [None] * N_PARTIES)
            slot[party_id] = payload
            if all(p is not None for p in slot):
                self._results[k] = client_reconstruct(slot, shape, frac_bits)  # type: ignore[arg-type]
                self._lock.notify_all()
            if not self._lock.wait_for(lambda: k in self._results, timeout=60.0):
                raise TimeoutError("the other parties did not deliver their output shares")
            return self._results[k]

    def sampling_noise(self, party_id: int, vocab: int, frac_bits: int, sampler: Sampler) -> bytes:
        with self._lock:
            k = self._noise_calls[party_id]
            self._noise_calls[party_id] += 1
            if k not in self._noise:
                if self._noise_gen is None:
                    self._noise_gen = sampling_generator(sampler)
                noise = gumbel_noise(vocab, sampler.temperature, self._noise_gen)
                self._noise[k] = client_make_shares(noise, frac_bits)
            return self._noise[k][party_id]
