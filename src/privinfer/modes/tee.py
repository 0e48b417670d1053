"""The tee mode: the plain engine inside an attested enclave process; the client attests, then
streams over an AES-GCM channel keyed into the quote.

Security assumption: the client pins the root (`root_cert=`, default the exported one in the
cache) and computes the expected measurement from its own model file and code (or takes
`measurement=`); nothing leaves this process before the quote verified. With no `server`, a local
enclave + host is started for the call (convenience only) and stopped afterwards.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from privinfer.modes import Mode, Option, Request
from privinfer.security.matrix import ASSETS, META_LEAK, NA, Cell
from privinfer.tee.isolation import platform_kind

if TYPE_CHECKING:
    from privinfer.models.generate import GenerationStats

GEN = frozenset({"generate"})

# Timing of the enclave's shared work (tee/batching.py), for the metadata cells.
SHARED_TIMING = (
    "time to first token is shorter when the prompt starts with the model's default system turn "
    "(the one cached prefix: public tokens, the same for every client, computed at start), so it "
    "reveals whether the client kept the default system prompt and nothing of its own text; no "
    "cache is keyed by private content, so no timing depends on another session's prompt; a "
    "decode step's time grows with the number of sessions batched with it, which the host sees "
    "anyway (it relays every session)"
)


def _host_cells(platform: str, same_user: bool) -> dict[str, Cell]:
    """What the host operator learns, from the platform's isolation (tee.isolation.PLATFORMS)."""
    kind = platform_kind(platform)
    meta = Cell(
        "no",
        META_LEAK
        + "; "
        + SHARED_TIMING
        + "; side channels (cache, power, page faults) out of scope",
    )
    if not kind.hardware and same_user:
        why = (
            "host and enclave run as one OS user (--insecure-same-user): the host can read the "
            "platform keys, sign quotes for any identity, derive every sealing key and read the "
            "enclave's memory"
        )
        return {"prompt": Cell("no", why), "weights": Cell("no", why), "output": Cell("no", why),
                "metadata": meta}  # fmt: skip
    return {
        "prompt": Cell(
            "yes",
            "the host forwards ciphertext only; the enclave holds the keys; " + kind.isolation,
            kind.assumption,
        ),
        "weights": Cell(
            "yes",
            "model sealed to the enclave's measurement; the host stores the blob only",
            kind.assumption + "; rollback detected with a monotonic counter",
        ),
        "output": Cell(
            "yes", "encrypted inside the enclave before it reaches the host", kind.assumption
        ),
        "metadata": meta,
    }


def tee_threat(
    platform: str = "software", *, same_user: bool = False
) -> dict[str, dict[str, Cell]]:
    """The tee mode's threat rows on `platform` (a key of tee.isolation.PLATFORMS), with host and
    enclave under one OS user or not (software platform only: hardware isolates by itself)."""
    host = _host_cells(platform, same_user)
    server_prompt = (
        Cell("yes", "the 'server' is host + enclave: see host operator")
        if host["prompt"].protected == "yes"
        else Cell(
            "no", "the 'server' is host + enclave, and the host is not kept out: see host operator"
        )
    )
    return {
        "network observer": {
            "prompt": Cell(
                "yes",
                "AES-256-GCM channel keyed by X25519 bound into the attested quote",
                "the client verifies the quote and pins the platform root",
            ),
            "weights": Cell("yes", "weights never leave the enclave host; sealed at rest"),
            "output": Cell("yes", "AES-256-GCM channel, per-direction keys, counter nonces"),
            "metadata": Cell(
                "no", "record sizes and timing reveal " + META_LEAK + "; " + SHARED_TIMING
            ),
        },
        "host operator": host,
        "one compute party": {a: NA for a in ASSETS},
        "two colluding parties": {a: NA for a in ASSETS},
        "the client": {
            "prompt": Cell("n/a", "the client owns the prompt"),
            "weights": Cell(
                "partly",
                "weights stay in the enclave; outputs may leak them to a determined "
                "querier (model extraction is out of scope)",
            ),
            "output": Cell("n/a", "the client owns the output"),
            "metadata": Cell("n/a", "the client owns its metadata"),
        },
        "the server": {
            "prompt": server_prompt,
            "weights": Cell("n/a", "the server side owns the weights"),
            "output": Cell(server_prompt.protected, "see host operator"),
            "metadata": Cell("no", META_LEAK),
        },
    }


class TeeMode(Mode):
    name = "tee"
    summary = "the plain engine inside an attested enclave; prompt and output travel encrypted"
    tasks = GEN
    options = (
        Option(
            "server", str, None, "URL of a running enclave host (default: start a local one)", GEN
        ),
        Option(
            "root_cert",
            str,
            None,
            "PEM file of the pinned platform root (default: the exported one)",
            GEN,
            cli_flag="--root",
        ),
        Option(
            "measurement",
            str,
            None,
            "expected enclave measurement, hex (default: computed from local code and model)",
            GEN,
        ),
    )
    leakage = (
        "prompt and output lengths (record sizes)",
        "number of generated tokens",
        "per-token timing",
        "which model is served (its measurement)",
        "hardware side channels are out of scope",
    )
    threat = tee_threat()
    bench_workloads = ("generate", "throughput")

    def threat_rows(
        self, *, platform: str = "software", insecure_same_user: bool = False, **_: Any
    ) -> dict[str, dict[str, Cell]]:
        """The threat rows for the platform and user separation in use (`tee_threat`)."""
        return tee_threat(platform, same_user=insecure_same_user)

    def security(self, model: Any | None, **params: Any) -> dict[str, Any]:
        from privinfer.security.report import tee_parameters

        return tee_parameters(
            params.get("platform") or "software", bool(params.get("insecure_same_user"))
        )

    def info(self, model: Any | None, **options: Any) -> dict[str, Any]:
        """The claims of one fresh attestation of `server` (verified before they are shown)."""
        client = _client(model, **options)
        try:
            session = client.attest()
            session.close()
        finally:
            client.close()
        c = session.claims
        return {
            "summary": self.summary,
            "server": options.get("server"),
            **_claims_brief(c),
            "components": {k: v.hex() for k, v in c.components.items()},
            "checked": list(c.checked),
            "not_checked": list(c.not_checked),
            "attest_s": round(session.attest_s, 6),
        }

    @contextlib.contextmanager
    def services(self, model: Any, **options: Any) -> Iterator[dict[str, Any]]:
        """With no `server`: one local enclave + host for every request, stopped on exit."""
        if options.get("server"):
            yield options
            return
        import torch

        from privinfer.tee.local import LocalServer

        with LocalServer(model=str(model.name), threads=torch.get_num_threads()) as local:
            yield {**options, "server": local.url, "root_cert": local.root}

    def generate(
        self,
        model: Any,
        req: Request,
        stats: GenerationStats,
        *,
        server: str | None = None,
        root_cert: bytes | str | Path | None = None,
        measurement: bytes | str | None = None,
    ) -> Iterator[int]:
        """Token ids from an attested enclave; `stats` gets client-side timings and channel bytes."""
        import torch

        from privinfer.models.generate import timed_stream
        from privinfer.tee.client import TeeResult
        from privinfer.tee.local import LocalServer

        local = None
        if server is None:
            local = LocalServer(threads=torch.get_num_threads()).start()
            server, root_cert = local.url, local.root
        client = _client(model, server=server, root_cert=root_cert, measurement=measurement)
        try:
            t0 = time.perf_counter()
            session = client.attest()
            stats.costs.record("attest", wall_s=time.perf_counter() - t0, rounds=1)
            stats.details["tee"] = _claims_brief(session.claims)
            body = {
                "prompt_ids": list(req.prompt_ids),
                "max_new_tokens": req.max_new_tokens,
                "temperature": req.sampler.temperature,
                "top_p": req.sampler.top_p,
                "seed": req.sampler.seed,
            }
            res = TeeResult()
            try:
                ids = (int(msg["id"]) for msg in session.stream(body, res))
                yield from timed_stream(ids, stats, prompt_tokens=len(req.prompt_ids))
            finally:
                session.close()
            stats.stop_reason = res.stop_reason
        finally:
            client.close()
            if local is not None:
                local.stop()


def _client(model: Any, *, server: str, root_cert: Any, measurement: Any) -> Any:
    """The attesting client: pinned root (default: the exported one) and expected measurement
    (default: computed from the local code and model file)."""
    from privinfer.tee.client import TeeClient
    from privinfer.tee.protocol import default_root_cert

    return TeeClient(
        server,
        root_cert=root_cert or default_root_cert(),
        measurement=measurement,
        model_file=None if measurement else model.source,
    )


def _claims_brief(c: Any) -> dict[str, Any]:
    """The verified claims a client shows: platform, measurement, debug flag, TCB (svn)."""
    out = {
        "platform": c.evidence_type,
        "measurement": c.measurement.hex(),
        "debug": c.debug,  # None: the evidence does not show it
        "svn": c.svn,
        "product_id": c.product_id,
    }
    if "tcb_status" in c.extra:  # hardware evidence appraised against vendor collateral
        out["tcb_status"] = c.extra["tcb_status"]
    return out


MODE = TeeMode()
