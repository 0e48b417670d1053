"""The client's side of MPC inference: shares private inputs (token one-hots) and reconstructs
outputs; the in-process `LocalClient` serves tests and dry runs (it shares one process with the
parties, so it proves nothing about isolation; the protocol messages are the real ones).

A `ClientPort` is what `MpcOps` calls: `token_input` returns this party's payload of the
client's one-hot shares (deployments ignore the `ids` argument, which parties never see), and
`output` hands this party's reveal payload to the client; `sampling_temperature` returns this
party's payload of the client's shared temperature (once per session, when sampling: the
parties clamp it to [0, T_MAX] and generate the Gumbel noise themselves; the client sends no
noise, so it cannot bias the sample).
In the in-process harness `output` returns the reconstructed value so that one decoding loop can
drive all parties; a deployed port returns None and the client alone learns the value.
"""

from __future__ import annotations

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

    def sampling_temperature(self, party_id: int, frac_bits: int, sampler: Sampler) -> bytes: ...


def temperature_shares(temperature: float, frac_bits: int) -> list[bytes]:
    """The client's three payloads of its temperature (shape (1,)); values above T_MAX are sent
    as T_MAX (the parties clamp to [0, T_MAX] whatever arrives)."""
    from privinfer.mpc.protocols.gumbel import T_MAX

    t = min(float(temperature), T_MAX)
    return client_make_shares(torch.tensor([t], dtype=torch.float64), frac_bits)


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
        self._temperature: list[bytes] | None = None

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

    def sampling_temperature(self, party_id: int, frac_bits: int, sampler: Sampler) -> bytes:
        with self._lock:
            if self._temperature is None:
                self._temperature = temperature_shares(sampler.temperature, frac_bits)
            return self._temperature[party_id]
