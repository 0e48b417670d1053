"""One mpc+he session between the server (party 0, the model owner) and the client (party 1):
the messages around the model run, over a `TwoParty` (mutually authenticated TLS in
deployment, memory links in tests). Semi-honest; what crosses besides the protocols' masked
messages is public: the server's manifest (model name, family, weight names and shapes), the
client's request (task, number of prompt tokens or text lengths, token budget, whether
sampling is on; never the temperature, which the client shares), one
continue/stop byte per generated token (so the server learns how many tokens were generated)
and, at the end, the server's per-op counts (rounds, bytes, seconds). Token ids, prompts,
outputs and weights never cross in the clear.

Round 1: the server sends its manifest, the client its request (JSON). Round 2: the server
answers "ok" or one sentence why not (sizes out of range, another model). Then the model runs
at both parties on the same public shapes: the server feeds placeholder ids of the right count.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

from privinfer.errors import InputError
from privinfer.models.ops import Sampler
from privinfer.net.peer import PeerError
from privinfer.twopc.engine import MpcHeOps, placeholder_weights
from privinfer.twopc.linear import LinearBackend, make_backend
from privinfer.twopc.runtime import TwoParty

MAX_JSON_BYTES = 1 << 20
CONTINUE, STOP = b"\x01", b"\x00"
MAX_TEXTS = 256
T_MAX = 100.0  # T g stays far inside the ring (|g| < 37)


def _json(party: TwoParty, mine: dict[str, Any] | None) -> dict[str, Any]:
    got = party.exchange(b"" if mine is None else json.dumps(mine).encode())
    if not got or len(got) > MAX_JSON_BYTES:
        raise PeerError(party.peer, "session message has the wrong length")
    try:
        out = json.loads(got)
    except ValueError:
        raise PeerError(party.peer, "session message is not JSON") from None
    if not isinstance(out, dict):
        raise PeerError(party.peer, "session message is not a JSON object")
    return out


def manifest(model: Any) -> dict[str, Any]:
    """The public facts the client needs to run its half: name, family, weight shapes."""
    shapes = {k: list(v.shape) for k, v in model.weights.items()}
    return {"model": model.name, "family": model.kind, "shapes": shapes}


def _backend_name(backend: LinearBackend | None) -> str:
    return backend.name if backend is not None else make_backend().name


def _check_request(model: Any, req: dict[str, Any]) -> str | None:
    """Why the server refuses `req`, in one sentence; None when it is fine."""
    task = req.get("task")
    if req.get("model") != model.name:
        return f"this server serves model {model.name!r}"
    if task == "generate" and model.kind != "bert":
        n, budget = req.get("prompt_tokens"), req.get("max_new_tokens")
        if not isinstance(n, int) or not isinstance(budget, int) or n < 1 or budget < 1:
            return "prompt_tokens and max_new_tokens must be positive integers"
        if n + budget > model.cfg.max_context:
            return f"prompt plus new tokens exceed the model's context of {model.cfg.max_context}"
        return None
    if task == "embed" and model.kind == "bert":
        lengths = req.get("lengths")
        if not isinstance(lengths, list) or not 0 < len(lengths) <= MAX_TEXTS:
            return f"lengths must be a list of 1 to {MAX_TEXTS} text lengths"
        if not all(isinstance(n, int) and 0 < n <= model.cfg.max_positions for n in lengths):
            return f"every text length must lie in [1, {model.cfg.max_positions}]"
        return None
    return f"model {model.name!r} does not support task {task!r}"


def serve_session(party: TwoParty, model: Any, backend: LinearBackend | None = None) -> dict:
    """The server's half of one session (party 0); returns its request and costs (public)."""
    req = _json(party, {**manifest(model), "linear": _backend_name(backend)})
    why = _check_request(model, req)
    party.send_only(b"ok" if why is None else why.encode())
    if why is not None:
        raise InputError(f"refused a client request: {why}")
    ops = MpcHeOps(party, backend)
    net = model.build(ops)
    if req["task"] == "generate":
        cache, n, pos = net.new_cache(), req["prompt_tokens"], 0
        sampler = Sampler(temperature=1.0 if req.get("sampling") else 0.0)  # T is the client's
        for step in range(req["max_new_tokens"]):
            ops.next_token(net.forward([0] * n, cache, pos), sampler, step)
            pos, n = pos + n, 1
            flag = party.exchange(b"")
            if flag == STOP:
                break
            if flag != CONTINUE:
                raise PeerError(party.peer, "continue/stop flag is malformed")
    else:
        for n in req["lengths"]:
            ops.reveal(net.encode([0] * n))
    costs = ops.costs().to_dict()
    party.send_only(json.dumps(costs).encode())
    return {"request": req, "costs": costs}


def _client_model(
    party: TwoParty, model: Any, request: dict[str, Any], backend: LinearBackend | None
) -> tuple[MpcHeOps, Any]:
    """Send the request, check the manifest and the server's answer; the client's definition
    on shape-only weights (it never holds the server's weights)."""
    man = _json(party, {**request, "model": model.name})
    answer = party.exchange(b"")
    if answer != b"ok":
        text = answer[:300].decode("utf-8", "replace")
        raise InputError(f"the mpc+he server refused the request: {text}")
    if man.get("model") != model.name or man.get("family") != model.kind:
        raise InputError(f"the mpc+he server serves {man.get('model')!r}, not {model.name!r}")
    if man.get("linear") != _backend_name(backend):
        raise InputError(
            f"the mpc+he server uses linear backend {man.get('linear')!r}, "
            f"this client {_backend_name(backend)!r}"
        )
    shapes = man.get("shapes")
    if not isinstance(shapes, dict):
        raise PeerError(party.peer, "manifest lacks the weight shapes")
    ops = MpcHeOps(party, backend)
    return ops, model.family.build(model.cfg, placeholder_weights(shapes), ops)


def _server_costs(party: TwoParty) -> dict[str, Any]:
    got = party.exchange(b"")
    try:
        return json.loads(got)
    except ValueError:
        raise PeerError(party.peer, "cost report is not JSON") from None


def client_generate(
    party: TwoParty,
    model: Any,
    prompt_ids: Sequence[int],
    max_new_tokens: int,
    stop_ids: Sequence[int],
    report: dict[str, Any],
    backend: LinearBackend | None = None,
    sampler: Sampler | None = None,
) -> Iterator[int]:
    """The client's half of a generation (party 1): yields the new token ids (greedy, or
    sampled with `sampler`'s temperature, which stays secret); fills `report` with both
    parties' costs at the end."""
    sampler = sampler or Sampler()
    if not sampler.greedy and not sampler.temperature <= T_MAX:
        raise InputError(f"--temperature must be at most {T_MAX:g} in mode mpc+he")
    req = {"task": "generate", "prompt_tokens": len(prompt_ids), "max_new_tokens": max_new_tokens}
    req["sampling"] = not sampler.greedy
    ops, net = _client_model(party, model, req, backend)
    cache, ids, pos = net.new_cache(), list(prompt_ids), 0
    for step in range(max_new_tokens):
        tok = ops.next_token(net.forward(ids, cache, pos), sampler, step)
        pos, ids = pos + len(ids), [tok]
        stop = tok in stop_ids or step + 1 == max_new_tokens
        party.send_only(STOP if stop else CONTINUE)
        if tok not in stop_ids:
            yield tok
        if stop:
            break
    report["client"] = ops.costs().to_dict()
    report["server"] = _server_costs(party)


def client_embed(
    party: TwoParty,
    model: Any,
    ids_list: list[list[int]],
    report: dict[str, Any],
    backend: LinearBackend | None = None,
) -> list[Any]:
    """The client's half of sentence embeddings: one revealed vector per text."""
    req = {"task": "embed", "lengths": [len(i) for i in ids_list]}
    ops, net = _client_model(party, model, req, backend)
    out = [ops.reveal(net.encode(ids)) for ids in ids_list]
    report["client"] = ops.costs().to_dict()
    report["server"] = _server_costs(party)
    return out
