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
from datetime import datetime
from typing import TYPE_CHECKING

from cryptography import x509

from privinfer.tee.claims import Claims
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


def _is_hardware_evidence(data: bytes) -> bool:
    """True for evidence in a hardware format (SGX/TDX DCAP, SNP, NVIDIA); software quotes and
    anything unrecognised go to the software verifier, which names what is wrong with them."""
    from privinfer.tee.claims import EvidenceRejected
    from privinfer.tee.evidence.detect import detect_type

    if data.startswith(b"PIQT"):
        return False
    try:
        detect_type(data)
    except EvidenceRejected:
        return False
    return True


def verify_attestation(
    quote_bytes: bytes,
    nonce: bytes,
    enclave_pubkey: bytes,
    context: bytes,
    root_cert: x509.Certificate | bytes,
    policy: Policy,
    now: datetime | None = None,
) -> Claims:
    """Client side: verify chain, signature, binding (nonce + key + context) and policy.

    Returns the verified Claims or raises `EvidenceRejected` naming the stage and reason. A wrong
    nonce, key or context shows up as `binding: report-data-mismatch`.
    """
    expected = report_data(enclave_pubkey, nonce, context)
    if _is_hardware_evidence(quote_bytes):
        # Hardware evidence (e.g. a Gramine-SGX DCAP quote): the same pipeline against the
        # vendor's pinned root instead of the software platform's.
        from privinfer.tee.evidence.detect import verify_evidence

        claims = verify_evidence(quote_bytes, policy=policy, expected_report_data=expected, at=now)
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
