"""Attestation binding: a fresh verifier nonce and the enclave's ephemeral key bound into report_data.

Security assumption: the client draws a fresh 32-byte nonce for every session and never reuses
it; the enclave draws a fresh X25519 key pair per session and keeps the private half inside the
enclave. Then a valid quote whose report_data matches proves the key belongs to an enclave with
the quoted identity, now (no replay of an old quote or key).

    report_data = SHA-512(lp("privinfer-tee-v1") || lp(enclave_x25519_pub) || lp(nonce) || lp(context))

`lp` is a big-endian u32 length prefix; `context` is the session context (e.g. session id and
protocol parameters) that both sides agree on before attesting.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509

from privinfer.tee.claims import Claims, EvidenceRejected, Reason, Stage
from privinfer.tee.evidence.software import verify_software_quote
from privinfer.tee.measurement import EnclaveIdentity, lp
from privinfer.tee.platform import Platform
from privinfer.tee.policy import Policy

if TYPE_CHECKING:
    from privinfer.tee.providers import QuoteProvider

DOMAIN = b"privinfer-tee-v1"
NONCE_LEN = 32
PUBKEY_LEN = 32


def new_nonce() -> bytes:
    """A fresh 32-byte verifier nonce from the OS CSPRNG (one per session, never reused)."""
    return secrets.token_bytes(NONCE_LEN)


def report_data(enclave_pubkey: bytes, nonce: bytes, context: bytes) -> bytes:
    """The 64 bytes an enclave puts in its quote for this session (SHA-512, see module doc)."""
    if len(enclave_pubkey) != PUBKEY_LEN:
        raise ValueError("enclave public key must be a 32-byte X25519 key")
    if len(nonce) != NONCE_LEN:
        raise ValueError("nonce must be 32 bytes")
    body = lp(DOMAIN) + lp(enclave_pubkey) + lp(nonce) + lp(context)
    return hashlib.sha512(body).digest()


def attest(
    platform: Platform | QuoteProvider,
    identity: EnclaveIdentity,
    enclave_pubkey: bytes,
    nonce: bytes,
    context: bytes,
    *,
    now: datetime | None = None,
) -> bytes:
    """Enclave side: quote `identity` with report_data bound to this session's key and nonce.

    `platform` is the software platform or any `QuoteProvider` (e.g. Gramine-SGX's)."""
    return platform.quote(identity, report_data(enclave_pubkey, nonce, context), now=now)


@dataclass(frozen=True)
class HardwareTrust:
    """What a client trusts for hardware evidence, chosen by the client, never by the host.

    `evidence_type` is the one format accepted ("sgx", "tdx", "snp", "nvidia"); `roots` replaces
    the built-in pinned vendor root (None keeps it); `collateral` is an Intel DCAP collateral
    JSON file or a cache directory of them (SGX/TDX: without it the default policy refuses the
    quote, `tcb-not-checked`); `certs` are certificates the evidence does not carry (SNP: VCEK,
    ASK, ARK; NVIDIA: the device chain).
    """

    evidence_type: str
    collateral: Path | str | None = None
    roots: Sequence[bytes] | None = None
    certs: Sequence[bytes] = ()


def _verify_hardware(
    data: bytes, trust: HardwareTrust, expected: bytes, policy: Policy, now: datetime | None
) -> Claims:
    from privinfer.tee.evidence.collateral import collateral_for
    from privinfer.tee.evidence.detect import detect_type, verify_evidence

    kind = "software" if data.startswith(b"PIQT") else _detected(data, detect_type)
    if kind != trust.evidence_type:
        raise EvidenceRejected(
            Stage.CHAIN,
            Reason.UNTRUSTED_ROOT,
            f"the client trusts {trust.evidence_type} evidence, the host sent {kind}",
        )
    collateral = None
    if trust.collateral is not None and kind in ("sgx", "tdx"):
        collateral = collateral_for(data, trust.collateral)
    return verify_evidence(
        data,
        evidence_type=kind,
        certs=list(trust.certs) or None,
        policy=policy,
        expected_report_data=expected,
        at=now,
        roots=trust.roots,
        collateral=collateral,
    )


def _detected(data: bytes, detect_type: object) -> str:
    try:
        return detect_type(data)  # type: ignore[operator, no-any-return]
    except EvidenceRejected:
        return "unrecognised"


def verify_attestation(
    quote_bytes: bytes,
    nonce: bytes,
    enclave_pubkey: bytes,
    context: bytes,
    root_cert: x509.Certificate | bytes | HardwareTrust,
    policy: Policy,
    now: datetime | None = None,
) -> Claims:
    """Client side: verify chain, signature, binding (nonce + key + context) and policy.

    `root_cert` is the client's trust: a software platform root (then only software quotes
    chaining to it pass) or a `HardwareTrust` (then only that hardware format, against the
    pinned vendor root, with Intel collateral for SGX/TDX). The host's bytes never choose the
    root. Returns the verified Claims or raises `EvidenceRejected` naming the stage and reason.
    A wrong nonce, key or context shows up as `binding: report-data-mismatch`.
    """
    expected = report_data(enclave_pubkey, nonce, context)
    if isinstance(root_cert, HardwareTrust):
        claims = _verify_hardware(quote_bytes, root_cert, expected, policy, now)
        claims.checked.append(
            "binding: report_data = SHA-512(domain, enclave X25519 key, nonce, context)"
        )
        return claims
    claims = verify_software_quote(
        quote_bytes, root_cert=root_cert, expected_report_data=expected, policy=policy, now=now
    )
    claims.checked.append(
        "binding: report_data = SHA-512(domain, enclave X25519 key, nonce, context)"
    )
    return claims
