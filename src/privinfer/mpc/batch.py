"""Several sequences per protocol run (issue 17, item 3, the engine part): `BatchedMpcOps` lets
`Llama.forward_batch` run B sequences' decode steps (or prefills) as one step whose rounds are
those of one sequence (semi-honest, honest majority, like `MpcOps`; the parties see the rows'
count and each sequence's length, as for B separate sessions, and nothing of any token).

The linear maps, norms and SwiGLU already run on all rows stacked, in the rounds of one row.
Attention is per sequence (each over its own KV cache): `attention` only records the sequence's
call while the step is split (`split_rows`), and `cat_rows` runs the recorded calls together in
`Party.parallel`, so their rounds travel in the same messages (max, not sum). `next_tokens` takes
the argmax of every sequence's logits in one tournament over [B, V].

Who learns a token: `next_tokens` opens each sequence's index to the client port as one payload
of shape (B,); a serving loop that batches several clients hands each client only its own
row's shares (not built yet: `privinfer mpc serve` still runs one session per TLS mesh).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from privinfer.errors import InputError
from privinfer.models.ops import Sampler
from privinfer.mpc.ops import MpcOps, attend
from privinfer.mpc.protocols import compare
from privinfer.mpc.runtime import Party
from privinfer.mpc.shares import RShare, reveal_to_client_payload


class BatchedMpcOps(MpcOps):
    """`MpcOps` with `split_rows` / `cat_rows` (for `forward_batch`) and batched greedy
    `next_tokens`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._split = False
        self._deferred: list[tuple[RShare, dict[str, Any]]] = []

    def split_rows(self, x: RShare, sizes: Sequence[int]) -> list[RShare]:
        self._flush_rope()  # q's deferred truncation lands in q itself, not in its row views
        self._split = True
        out, start = [], 0
        for n in sizes:
            out.append(x.map(lambda t, s=start, n=n: t[s : s + n]))
            start += n
        return out

    def attention(self, q: RShare, k: RShare, v: RShare, **kw: Any) -> RShare:
        if not self._split:
            return super().attention(q, k, v, **kw)
        self._flush_rope()
        slot = RShare(q.a, q.b, q.pid, q.f)  # filled in by cat_rows
        self._deferred.append((slot, {"q": q, "k": k, "v": v, **kw}))
        return slot

    def cat_rows(self, xs: Sequence[RShare]) -> RShare:
        jobs, self._deferred, self._split = self._deferred, [], False
        if jobs:
            with self.party.op("attention"):

                def program(job: dict[str, Any]) -> Any:
                    return lambda child: attend(child, **job)

                done = self.party.parallel(*(program(job) for _, job in jobs))
            for (slot, _), r in zip(jobs, done, strict=True):
                slot.a, slot.b, slot.f = r.a, r.b, r.f
        return RShare.cat(list(xs))

    def next_tokens(self, logits: RShare, sampler: Sampler) -> list[int]:
        """Greedy argmax of each row of `logits` ([B, V]) in one tournament; the B indices are
        opened to the client port only (re-randomised with a zero sharing, as in
        `next_token`). Returns them when the port is in-process, else B times -1."""
        if not sampler.greedy:
            raise InputError("batched MPC decoding is greedy only in this version")
        p: Party = self.party
        with p.op("argmax"):
            _, idx = compare.argmax_lastdim(p, logits)
        flat = idx.map(lambda a: a.reshape(-1))
        n = int(flat.shape[0])
        masked = RShare(flat.a + p.rand.zero_share((n,)), flat.b, p.pid, 0)
        got = self.client.output(p.pid, reveal_to_client_payload(masked), (n,), 0)
        return [-1] * n if got is None else [int(t) for t in got.round().tolist()]
