"""Prometheus metrics of the proxy: counts and timings only. Labels are fixed vocabularies
(route, status code, mode, finish reason); no prompt, output, model text or key ever reaches a
label or a value."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE  # noqa: N811
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["CONTENT_TYPE", "Metrics"]


class Metrics:
    """One registry per app, so several proxies (tests) never share counters."""

    def __init__(self, mode: str) -> None:
        self.registry = CollectorRegistry()
        self.mode = mode
        self.requests = Counter(
            "privinfer_requests",
            "HTTP requests answered, by route and status code",
            ["route", "status"],
            registry=self.registry,
        )
        self.tokens = Counter(
            "privinfer_completion_tokens",
            "tokens generated through the mode",
            ["mode"],
            registry=self.registry,
        )
        self.prompt_tokens = Counter(
            "privinfer_prompt_tokens",
            "prompt tokens sent into the mode",
            ["mode"],
            registry=self.registry,
        )
        self.finished = Counter(
            "privinfer_choices_finished",
            "choices finished, by reason (stop, length, error)",
            ["mode", "reason"],
            registry=self.registry,
        )
        self.token_seconds = Histogram(
            "privinfer_token_seconds",
            "seconds per generated token after the first (decode step through the mode)",
            ["mode"],
            buckets=(0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30, 120),
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "privinfer_mode_call_seconds",
            "seconds of one mode call (generation of all choices, or an embedding batch)",
            ["mode", "task"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1200),
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "privinfer_requests_in_flight", "mode calls queued or running", registry=self.registry
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
