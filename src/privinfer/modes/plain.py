"""The plain mode: the reference engine run locally, with no protection at all."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from privinfer.modes import Mode, Request
from privinfer.security.matrix import ADVERSARIES, ASSETS, NA, Cell

if TYPE_CHECKING:
    import torch

    from privinfer.models.costs import EmbeddingStats
    from privinfer.models.generate import GenerationStats


class PlainMode(Mode):
    name = "plain"
    summary = "no protection: the reference engine, run by whoever holds the prompt and weights"
    tasks = frozenset({"generate", "embed"})
    leakage = ("everything: prompt, output, weights and timing are in the clear",)
    threat = {
        adv: {
            asset: (
                NA
                if adv in ("one compute party", "two colluding parties")
                else Cell("no", "nothing protects it: plain runs in the clear")
            )
            for asset in ASSETS
        }
        for adv in ADVERSARIES
    }
    bench_workloads = ("generate",)
    reveals_logits = True

    def info(self, model: Any | None, **options: Any) -> dict[str, Any]:
        return {"summary": self.summary, "protection": "none"}

    def generate(
        self, model: Any, req: Request, stats: GenerationStats, **options: Any
    ) -> Iterator[int]:
        from privinfer.models.generate import generate_ids

        return generate_ids(
            model.plain(),
            req.prompt_ids,
            sampler=req.sampler,
            max_new_tokens=req.max_new_tokens,
            stop_ids=model.tokenizer.eos_ids,
            stats=stats,
        )

    def embed(
        self, model: Any, ids_list: list[list[int]], stats: EmbeddingStats, **options: Any
    ) -> torch.Tensor:
        import torch

        m = model.plain()
        with torch.inference_mode(), stats.costs.timed("encode"):
            return torch.cat([m.ops.reveal(m.encode(i)) for i in ids_list])


MODE = PlainMode()
