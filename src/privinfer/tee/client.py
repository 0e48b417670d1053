"""TEE client: fresh nonce per session, verify the quote (chain, signature, binding, policy), then talk encrypted.

Security assumption: the root certificate is pinned out of band (`privinfer tee init-platform`
exports it) and the expected measurement comes from the client's own copy of the code, config
and model (or `--measurement`). The server and network are untrusted: nothing is sent before the
quote verified, and only AES-GCM records leave the client. Debug enclaves are rejected unless the
caller's policy admits them explicitly.
"""

from __future__ import annotations

import base64
import os
import statistics
import struct
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509

from privinfer.errors import InputError, PrivinferError
from privinfer.models.registry import resolve
from privinfer.tee.attestation import HardwareTrust, new_nonce, verify_attestation
from privinfer.tee.channel import ChannelError, RecordType, SecureChannel, client_channel
from privinfer.tee.claims import Claims
from privinfer.tee.policy import ANY, Policy
from privinfer.tee.protocol import (
    PROTOCOL,
    ProtocolError,
    RecordSplitter,
    RequestRefused,
    TeeServerError,
    decode_message,
    default_root_cert,
    encode_message,
    expected_identity,
    generate_body,
)

CONTEXT = PROTOCOL.encode()


def load_root(root_cert: bytes | str | Path | x509.Certificate) -> x509.Certificate:
    """A pinned root: a certificate, PEM bytes, or the path of a PEM file."""
    if isinstance(root_cert, x509.Certificate):
        return root_cert
    data = root_cert if isinstance(root_cert, bytes) else Path(root_cert).read_bytes()
    return x509.load_pem_x509_certificate(data)


def measurement_policy(measurement: bytes, *, allow_debug: bool = False) -> Policy:
    """Admit exactly this measurement, any (undeclared-key) signer, no debug unless asked."""
    return Policy(
        allowed_measurements=frozenset({measurement}),
        allowed_signers=ANY,
        allow_debug=allow_debug,
        notes=("signer not pinned: enclave manifests are not signed yet",),
    )


def claims_summary(claims: Claims) -> str:
    """One line for stderr: what was verified, and whether a hardware root vouches for it."""
    comp = claims.components
    parts = [
        f"attested {claims.evidence_type}",
        f"measurement {claims.measurement.hex()[:16]}",
        f"(code {comp.get('code', b'').hex()[:8]}, config {comp.get('config', b'').hex()[:8]},"
        f" model {comp.get('model', b'').hex()[:8]})",
        f"svn {claims.svn}",
        "debug " + ("unknown" if claims.debug is None else "ON" if claims.debug else "off"),
        f"root {str(claims.extra.get('root_sha256', ''))[:16]}",
    ]
    if claims.evidence_type not in ("sgx", "tdx", "snp", "nvidia"):
        parts.append("- software platform: no hardware root of trust")
    elif "tcb_status" in claims.extra:
        parts.append(f"tcb {claims.extra['tcb_status']}")
    return " ".join(parts)


def _raise_for(resp: httpx.Response) -> None:
    if resp.status_code < 400:
        return
    try:
        err = resp.json()["error"]
        code, message = str(err["code"]), str(err.get("message", ""))
    except (ValueError, KeyError, TypeError):
        code, message = "http_error", ""
    raise TeeServerError(resp.status_code, code, message)


@dataclass
class TeeResult:
    """A finished TEE generation: ids, text and timings as the client observed them."""

    token_ids: list[int] = field(default_factory=list)
    text: str = ""
    first_token_s: float = 0.0
    token_s: list[float] = field(default_factory=list)
    enclave: dict[str, Any] = field(default_factory=dict)
    stop_reason: str = ""
    attest_s: float = 0.0
    handshake_s: float = 0.0
    claims: Claims | None = None


class Session:
    """An attested session: one enclave key, many requests (each with its own channel)."""

    def __init__(
        self,
        client: TeeClient,
        sid: bytes,
        enclave_pub: bytes,
        nonce: bytes,
        quote: bytes,
        claims: Claims,
        attest_s: float,
    ) -> None:
        self.client, self.sid, self.enclave_pub = client, sid, enclave_pub
        self.nonce, self.quote, self.claims, self.attest_s = nonce, quote, claims, attest_s
        self.handshake_s = 0.0
        self._index = 0

    def channel(self) -> tuple[int, bytes, SecureChannel]:
        """The next request's index, client key and channel (a fresh X25519 key per request)."""
        self._index += 1
        t0 = time.perf_counter()
        pub, ch = client_channel(
            self.enclave_pub, self.nonce, self.quote, self.sid + struct.pack(">I", self._index)
        )
        self.handshake_s = time.perf_counter() - t0
        return self._index, pub, ch

    def request_body(self, request: Mapping[str, Any]) -> tuple[bytes, SecureChannel]:
        idx, pub, ch = self.channel()
        recs = [ch.seal(RecordType.DATA, encode_message(request)), ch.seal(RecordType.END, b"")]
        return generate_body(idx, pub, recs), ch

    def stream(self, request: Mapping[str, Any], result: TeeResult | None = None) -> Iterator[dict]:
        """Send one request; yield decrypted token messages ({"id", "text"}); fill `result`.

        A request the enclave refuses raises `RequestRefused` (400 bad_request, an InputError)."""
        res = result if result is not None else TeeResult()
        body, ch = self.request_body(request)
        url = f"{self.client.url}/v1/sessions/{self.sid.hex()}/generate"
        t0 = last = time.perf_counter()
        headers = {"content-type": "application/octet-stream"}
        with self.client.http.stream("POST", url, content=body, headers=headers) as resp:
            if resp.status_code >= 400:
                resp.read()
                _raise_for(resp)
            split = RecordSplitter()
            refused: RequestRefused | None = None
            for chunk in resp.iter_bytes():
                for rec in split.feed(chunk):
                    rtype, pt = ch.open(rec)
                    if rtype is RecordType.END:
                        continue
                    msg = decode_message(pt)
                    now = time.perf_counter()
                    if msg.get("type") == "token":
                        if not res.token_ids:
                            res.first_token_s = now - t0
                        else:
                            res.token_s.append(now - last)
                        last = now
                        res.token_ids.append(int(msg["id"]))
                        res.text += str(msg.get("text", ""))
                        yield msg
                    elif msg.get("type") == "done":
                        res.enclave = msg
                        res.stop_reason = str(msg.get("stop_reason", ""))
                    elif msg.get("type") == "error":
                        # The enclave's answer (authenticated by the channel), not a broken
                        # stream: raised once the stream has ended properly, below.
                        text = str(msg.get("message") or "the enclave refused the request")
                        refused = RequestRefused(text, str(msg.get("code") or "bad_request"))
            if split.pending:
                raise ChannelError("stream ended inside a record (truncated)")
            ch.require_end()
            if refused is not None:
                raise refused

    def close(self) -> None:
        try:
            self.client.http.delete(f"{self.client.url}/v1/sessions/{self.sid.hex()}")
        except httpx.HTTPError:
            pass


class TeeClient:
    """Talks to `privinfer tee serve`: attest (verified before any data is sent), then generate."""

    def __init__(
        self,
        server_url: str,
        *,
        root_cert: bytes | str | Path | x509.Certificate | HardwareTrust,
        policy: Policy | None = None,
        measurement: bytes | str | None = None,
        model_file: Path | str | None = None,
        config: Mapping[str, Any] | None = None,
        allow_debug: bool = False,
        timeout: float = 300.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = server_url.rstrip("/")
        self.root = root_cert if isinstance(root_cert, HardwareTrust) else load_root(root_cert)
        if policy is None:
            if measurement is None:
                if model_file is None:
                    model_file = resolve("smollm2-135m")[1]
                measurement = expected_identity(model_file, config).measurement
            if isinstance(measurement, str):
                measurement = bytes.fromhex(measurement)
            policy = measurement_policy(measurement, allow_debug=allow_debug)
        self.policy = policy
        self.http = httpx.Client(timeout=timeout, transport=transport)

    def attest(self) -> Session:
        """New session: fresh 32-byte nonce, verify chain -> signature -> binding -> policy."""
        t0 = time.perf_counter()
        nonce = new_nonce()
        resp = self.http.post(
            f"{self.url}/v1/attest", json={"nonce": nonce.hex(), "context": CONTEXT.hex()}
        )
        _raise_for(resp)
        try:
            ev = resp.json()
            sid = bytes.fromhex(ev["session_id"])
            pub = bytes.fromhex(ev["enclave_pub"])
            quote = base64.b64decode(ev["quote"], validate=True)
        except (ValueError, KeyError, TypeError):
            raise ProtocolError("the server's attestation answer is malformed") from None
        try:
            claims = verify_attestation(quote, nonce, pub, CONTEXT, self.root, self.policy)
        except Exception:
            # Refused evidence: tell the server to drop the session (best effort), send nothing.
            try:
                self.http.delete(f"{self.url}/v1/sessions/{sid.hex()}")
            except httpx.HTTPError:
                pass
            raise
        return Session(self, sid, pub, nonce, quote, claims, time.perf_counter() - t0)

    def generate(
        self,
        prompt: str | Sequence[Mapping[str, str]] | None = None,
        *,
        prompt_ids: Sequence[int] | None = None,
        chat: bool = True,
        max_new_tokens: int = 128,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int | None = None,
        result: TeeResult | None = None,
    ) -> Iterator[dict]:
        """Attest a fresh session, stream token messages of one answer, close the session."""
        req: dict[str, Any] = {
            "chat": chat,
            "max_new_tokens": max_new_tokens,
            "temperature": temperature,
            "top_p": top_p,
            "seed": seed,
        }
        if prompt_ids is not None:
            req["prompt_ids"] = list(prompt_ids)
        elif isinstance(prompt, str):
            req["prompt"] = prompt
        else:
            req["messages"] = [dict(m) for m in prompt or []]
        session = self.attest()
        res = result if result is not None else TeeResult()
        res.attest_s, res.claims = session.attest_s, session.claims
        try:
            yield from session.stream(req, res)
        finally:
            res.handshake_s = session.handshake_s
            session.close()

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> TeeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def client_for(
    server: str,
    *,
    root: str | Path | None = None,
    measurement: str | None = None,
    model: str = "smollm2-135m",
    trust: HardwareTrust | None = None,
) -> TeeClient:
    """A TeeClient with the documented defaults: the root `tee init-platform` exported, the
    measurement from $PRIVINFER_TEE_MEASUREMENT or computed from the local code and `model`.

    With `trust` the client accepts only that hardware evidence (pinned vendor root, Intel
    collateral for SGX/TDX); its measurement (MRTD, SNP MEASUREMENT, MRENCLAVE) must be given,
    since it is the measurement of a whole VM or enclave image, not of the local code."""
    measurement = measurement or os.environ.get("PRIVINFER_TEE_MEASUREMENT")
    if trust is not None:
        if not measurement:
            raise InputError(
                f"--hardware {trust.evidence_type} needs --measurement (the image's measurement)"
            )
        try:
            return TeeClient(server, root_cert=trust, measurement=measurement)
        except ValueError:
            raise InputError("--measurement must be hex") from None
    root = str(root or default_root_cert())
    if not os.path.isfile(root):
        raise InputError(
            f"no pinned root certificate at {root}: pass --root or run `privinfer tee init-platform`"
        )
    model_file = None
    if not measurement:
        model_file = resolve(model)[1]
    try:
        return TeeClient(server, root_cert=root, measurement=measurement, model_file=model_file)
    except ValueError:
        raise InputError("--measurement must be 96 hex digits (SHA-384)") from None


@contextmanager
def reachable(url: str) -> Iterator[None]:
    """Turn a transport failure to `url` into one sentence (a PrivinferError)."""
    try:
        yield
    except httpx.HTTPError as exc:
        raise PrivinferError(
            f"cannot reach the TEE server at {url} ({type(exc).__name__})"
        ) from None


def run_generation(
    session: Session, request: dict[str, Any], write: Callable[[str], None] | None
) -> dict[str, Any]:
    """Stream one request; `write(text)` each delta; return ids, text and client-side timings."""
    res = TeeResult()
    t0 = time.perf_counter()
    for msg in session.stream(request, res):
        if write is not None and msg.get("text"):
            write(msg["text"])
    total = time.perf_counter() - t0
    med = statistics.median(res.token_s) if res.token_s else None
    return {
        "mode": "tee",
        "text": res.text,
        "token_ids": res.token_ids,
        "prompt_tokens": res.enclave.get("prompt_tokens"),
        "new_tokens": len(res.token_ids),
        "attest_s": round(session.attest_s, 6),
        "handshake_s": round(session.handshake_s, 6),
        "first_token_s": round(res.first_token_s, 6),
        "per_token_s_median": round(med, 6) if med is not None else None,
        "tokens_per_s": round(len(res.token_s) / sum(res.token_s), 3) if res.token_s else 0.0,
        "total_s": round(total, 6),
        "stop_reason": res.stop_reason,
        "enclave_prefill_s": res.enclave.get("prefill_s"),
        "enclave_queue_s": res.enclave.get("queue_s"),
    }
