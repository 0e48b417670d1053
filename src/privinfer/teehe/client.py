"""The tee+he client: verify the refresh enclave, release the key to it, submit, fetch.

Security assumption: the client trusts its pinned root (software platform root or a
`HardwareTrust`) and its policy (default: exactly the refresh enclave measurement computed from
its own copy of the code, `protocol.expected_identity`). It verifies the enclave's quote, bound to
its fresh nonce, the enclave's X25519 key and the session id, before the secret key is exported
from SEAL at all; on any failure nothing about the key leaves (`EvidenceRejected`, a
SecurityError). The key travels in one AES-256-GCM record of the attested channel, relayed by the
server. The client then sends its input encrypted under that key (secret-key encryption,
`HeClient.encrypt_rows`) and decrypts only the output (and, generating, each step's logits).
What the client learns: the output and what the he mode states (docs/he.md); nothing else.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from privinfer.errors import InputError
from privinfer.he.ckks import PARAMS_16384
from privinfer.he.serial import erase_buffer
from privinfer.he.session import HeClient, client_rows
from privinfer.he.transport import Connection, connect
from privinfer.net.cluster import ClusterConfig
from privinfer.tee.attestation import HardwareTrust, new_nonce, verify_attestation
from privinfer.tee.channel import RecordType, client_channel
from privinfer.tee.claims import Claims
from privinfer.tee.policy import ANY, Policy
from privinfer.teehe.protocol import context, expected_identity, pack_key_release, unpack_ack


@dataclass(frozen=True)
class Trust:
    """What the client accepts: a pinned root and a policy (default: the expected measurement)."""

    root: Any  # x509.Certificate, PEM bytes or path, or HardwareTrust
    policy: Policy

    @classmethod
    def for_root(cls, root: Any, allow_debug: bool = False) -> Trust:
        if not isinstance(root, HardwareTrust):
            from privinfer.tee.client import load_root

            root = load_root(root)
        policy = Policy(
            allowed_measurements=frozenset({expected_identity().measurement}),
            allowed_signers=ANY,
            allow_debug=allow_debug,
            notes=("signer not pinned: the refresh enclave's manifest is not signed yet",),
        )
        return cls(root, policy)


@dataclass
class Endpoint:
    cluster: ClusterConfig
    host: str
    port: int
    trust: Trust

    def connect(self) -> Connection:
        return connect(self.cluster, self.host, self.port)


@dataclass
class Figures:
    bytes_to_server: int = 0
    bytes_to_client: int = 0
    client_round_trips: int = 0  # client messages answered during compute (LOGT)
    input_bytes: int = 0  # the encrypted input
    output_bytes: int = 0  # the encrypted result
    server: dict[str, Any] = field(default_factory=dict)
    claims: Claims | None = None


def release_key(conn: Connection, client: HeClient, trust: Trust) -> Claims:
    """Attest the enclave (through the server) and release the secret key to it; sets the
    client's CKKS session id to the one the enclave's public keys define."""
    nonce = new_nonce()
    conn.send("ATST", {"nonce": nonce.hex()})
    _, meta, quote = conn.recv("ATST")
    sid, pub = bytes.fromhex(str(meta["session"])), bytes.fromhex(str(meta["pub"]))
    claims = verify_attestation(quote, nonce, pub, context(sid), trust.root, trust.policy)
    mine, chan = client_channel(pub, nonce, quote, sid)
    secret = client.ctx.export_secret_key()  # only now, after the verification passed
    body = pack_key_release(client.ctx.params.to_bytes(), secret)
    erase_buffer(secret)
    try:
        record = chan.seal(RecordType.DATA, body)  # type: ignore[arg-type]
    finally:
        erase_buffer(body)
    conn.send("KREL", {"pub": mine.hex()}, record)
    _, _, ack = conn.recv("KREL")
    client.ctx.session_id = unpack_ack(chan.open(ack)[1])
    return claims


def _tokens_for(rows: int) -> int:
    return 1 << max(0, (rows - 1).bit_length())


@dataclass
class PendingJob:
    """A submitted job: fetch its result later (the client keeps the key in memory)."""

    endpoint: Endpoint
    job: str
    client: HeClient
    figures: Figures

    def fetch(self, wait_s: float = 600.0) -> torch.Tensor:
        conn = self.endpoint.connect()
        try:
            conn.send("FTCH", {"job": self.job, "wait_s": wait_s})
            _, meta, payload = conn.recv("RSLT")
        finally:
            conn.close()
            self.figures.bytes_to_server += conn.bytes_sent
            self.figures.bytes_to_client += conn.bytes_received
        self.figures.server = dict(meta.get("figures", {}))
        self.figures.output_bytes = len(payload)
        return self.client.reveal(meta, payload)


def submit_embedding(
    endpoint: Endpoint,
    model: Any,
    ids: list[int],
    *,
    wait: bool = True,
    client: HeClient | None = None,
) -> tuple[torch.Tensor | PendingJob, Figures]:
    """Embed one text: with `wait` the result on this connection, else a `PendingJob` (the
    client disconnects; nothing is asked of it until it fetches). A fresh key per text unless
    `client` is given."""
    client = client or HeClient.create(PARAMS_16384)
    fig = Figures()
    conn = endpoint.connect()
    try:
        fig.claims = release_key(conn, client, endpoint.trust)
        rows = client_rows(model, ids)
        up = {"tokens": _tokens_for(len(ids)), "start": 0, "rows": len(ids)}
        task = {"task": "embed", "rows": len(ids), "upload": up, "wait": wait}
        upload = client.encrypt_rows(up, rows)
        fig.input_bytes = len(upload)
        conn.send("SUBM", task, upload)
        _, meta, _ = conn.recv("JOB")
        pending = PendingJob(endpoint, str(meta["job"]), client, fig)
        if not wait:
            return pending, fig
        _, meta, payload = conn.recv("RSLT")
        fig.server = dict(meta.get("figures", {}))
        fig.output_bytes = len(payload)
        return client.reveal(meta, payload), fig
    finally:
        conn.close()
        fig.bytes_to_server += conn.bytes_sent
        fig.bytes_to_client += conn.bytes_received


def generate(
    endpoint: Endpoint,
    model: Any,
    client: HeClient,
    prompt_ids: list[int],
    budget: int,
    context_tokens: int,
    on_token: Callable[[int], None] | None = None,
) -> Figures:
    """Generate: one client round trip per token (decrypt the logits, pick, send the next
    token's encrypted row); every refresh in between goes to the enclave."""
    fig = Figures()
    conn = endpoint.connect()
    try:
        fig.claims = release_key(conn, client, endpoint.trust)
        up = {"tokens": context_tokens, "start": 0, "rows": len(prompt_ids)}
        task = {
            "task": "generate", "prompt_len": len(prompt_ids), "max_new_tokens": budget,
            "context_tokens": context_tokens, "upload": up, "wait": True,
        }  # fmt: skip
        conn.send("SUBM", task, client.encrypt_rows(up, client_rows(model, prompt_ids)))
        conn.recv("JOB")
        while True:
            kind, meta, payload = conn.recv()
            if kind == "RSLT":
                fig.server = dict(meta.get("figures", {}))
                return fig
            if kind != "LOGT":
                raise InputError(f"Unexpected tee+he message {kind!r}.")
            fig.client_round_trips += 1
            before = len(client.chosen)
            tok = client.choose(meta, payload)
            if on_token is not None and len(client.chosen) > before:
                on_token(client.chosen[-1])
            if tok is None:
                conn.send("LOGT", {"stop": True})
                continue
            nxt = {
                "tokens": context_tokens,
                "start": len(prompt_ids) + len(client.chosen) - 1,
                "rows": 1,
            }
            rows = client_rows(model, [tok])
            conn.send("LOGT", {"stop": False, "upload": nxt}, client.encrypt_rows(nxt, rows))
    finally:
        conn.close()
        fig.bytes_to_server += conn.bytes_sent
        fig.bytes_to_client += conn.bytes_received


def endpoint_from(cluster: ClusterConfig, host: str, port: int, root: Any) -> Endpoint:
    return Endpoint(cluster, host, port, Trust.for_root(root))


def root_path(folder: Path) -> Path:
    return Path(folder) / "root_cert.pem"
