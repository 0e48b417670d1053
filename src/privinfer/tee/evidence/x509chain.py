"""Certificate chain checks for hardware evidence; trust comes only from a pinned vendor root.

Security assumption: the relying party pins the vendor root (by SHA-256 fingerprint of its DER,
or by passing the root certificate itself); everything below it is checked here, link by link:
issuer name, signature (ECDSA, RSA PKCS#1 v1.5, RSA-PSS as AMD uses), basic constraints with
path length, key usage where present, and each certificate's validity window at `at`.
Revocation (CRLs, OCSP) is NOT checked here; callers say so in their `not_checked`.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Sequence
from datetime import UTC, datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding

from privinfer.tee.claims import EvidenceRejected, Reason, Stage

# Vendor roots pinned by SHA-256 of their DER encoding (taken from the public sample files
# credited in tests/data/attestation/SOURCES.md).
INTEL_SGX_ROOT_SHA256 = bytes.fromhex(
    "44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3"
)
AMD_ARK_MILAN_SHA256 = bytes.fromhex(
    "69d063b45344d26a2e94e1f4210de49ef555308287d4c174445c95639a540bcd"
)
NVIDIA_DEVICE_IDENTITY_CA_SHA256 = bytes.fromhex(
    "102bf659d5419614c9d8e6aecebc80454eb26b1df6a769ac720b9a690b167b48"
)

Anchor = x509.Certificate | bytes
_PARSE_ERRORS = (
    ValueError,
    TypeError,
    UnsupportedAlgorithm,
    x509.DuplicateExtension,
    x509.InvalidVersion,
)


def as_utc(at: datetime | None) -> datetime:
    """The check time: now when None, naive times taken as UTC."""
    if at is None:
        return datetime.now(UTC)
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def load_certificates(data: bytes) -> list[x509.Certificate]:
    """Parse one DER certificate or any number of PEM certificates (in the given order).

    Names, extensions and keys are parsed here, eagerly, so a malformed certificate is one
    named rejection rather than an error deep inside the chain check.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # AMD VCEK serials and odd names trip warnings
            if b"-----BEGIN CERTIFICATE-----" in data:
                certs = x509.load_pem_x509_certificates(data)
            else:
                certs = [x509.load_der_x509_certificate(data)]
            for c in certs:
                _ = (c.version, c.subject, c.issuer, list(c.extensions), c.public_key())
    except _PARSE_ERRORS as exc:
        raise EvidenceRejected(Stage.CHAIN, Reason.MALFORMED, "certificate does not parse") from exc
    return certs


def fingerprint(cert: x509.Certificate) -> bytes:
    """SHA-256 over the certificate's DER encoding."""
    return hashlib.sha256(cert.public_bytes(Encoding.DER)).digest()


def anchors_from(roots: Sequence[bytes] | None, default: bytes) -> list[Anchor]:
    """Pinned anchors: the given root certificates (PEM/DER) or the built-in fingerprint."""
    if roots is None:
        return [default]
    out: list[Anchor] = []
    for r in roots:
        out.extend(load_certificates(r))
    return out


def _check_time(cert: x509.Certificate, at: datetime, what: str) -> None:
    if at < cert.not_valid_before_utc:
        raise EvidenceRejected(
            Stage.CHAIN,
            Reason.NOT_YET_VALID,
            f"{what} not valid until {cert.not_valid_before_utc:%Y-%m-%d}",
        )
    if at > cert.not_valid_after_utc:
        raise EvidenceRejected(
            Stage.CHAIN, Reason.EXPIRED, f"{what} expired {cert.not_valid_after_utc:%Y-%m-%d}"
        )


def verify_signed_by(cert: x509.Certificate, issuer: x509.Certificate, what: str) -> None:
    """Check that `issuer`'s key signed `cert` (ECDSA, RSA PKCS#1 v1.5 or RSA-PSS)."""
    try:
        key = issuer.public_key()
        algo = cert.signature_hash_algorithm
        params = cert.signature_algorithm_parameters
        if algo is None:
            raise EvidenceRejected(
                Stage.CHAIN, Reason.UNSUPPORTED, f"{what}: signature without hash"
            )
        if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(params, ec.ECDSA):
            key.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(algo))
        elif isinstance(key, rsa.RSAPublicKey) and isinstance(
            params, padding.PSS | padding.PKCS1v15
        ):
            key.verify(cert.signature, cert.tbs_certificate_bytes, params, algo)
        else:
            raise EvidenceRejected(
                Stage.CHAIN, Reason.UNSUPPORTED, f"{what}: key/signature algorithm mismatch"
            )
    except InvalidSignature as exc:
        raise EvidenceRejected(
            Stage.CHAIN, Reason.BAD_CHAIN, f"{what}: signature does not verify"
        ) from exc
    except (UnsupportedAlgorithm, ValueError) as exc:
        raise EvidenceRejected(
            Stage.CHAIN, Reason.UNSUPPORTED, f"{what}: unsupported signature"
        ) from exc


def _check_ca(issuer: x509.Certificate, below: int, what: str) -> None:
    """`issuer` must be a CA allowed to have `below` intermediate CAs beneath it."""
    try:
        bc = issuer.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound as exc:
        raise EvidenceRejected(
            Stage.CHAIN, Reason.BAD_CHAIN, f"{what}: issuer has no basic constraints"
        ) from exc
    if not bc.ca:
        raise EvidenceRejected(Stage.CHAIN, Reason.BAD_CHAIN, f"{what}: issuer is not a CA")
    if bc.path_length is not None and below > bc.path_length:
        raise EvidenceRejected(Stage.CHAIN, Reason.BAD_CHAIN, f"{what}: path length exceeded")
    try:
        ku = issuer.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return
    if not ku.key_cert_sign:
        raise EvidenceRejected(
            Stage.CHAIN, Reason.BAD_CHAIN, f"{what}: issuer may not sign certificates"
        )


def verify_chain(
    chain: Sequence[x509.Certificate], anchors: Sequence[Anchor], at: datetime, what: str
) -> list[x509.Certificate]:
    """Verify `chain` (leaf first) up to a pinned anchor at time `at`; return the full path.

    The top of `chain` must either be a pinned root itself (by fingerprint or equal DER) or be
    issued by a pinned root certificate in `anchors`. Raises EvidenceRejected otherwise.
    """
    if not chain:
        raise EvidenceRejected(Stage.CHAIN, Reason.MALFORMED, f"{what}: empty certificate chain")
    at = as_utc(at)
    pins = {a if isinstance(a, bytes) else fingerprint(a) for a in anchors}
    path = list(chain)
    top = path[-1]
    if fingerprint(top) not in pins:
        issuers = [
            a for a in anchors if isinstance(a, x509.Certificate) and a.subject == top.issuer
        ]
        if not issuers or top.issuer == top.subject:
            raise EvidenceRejected(
                Stage.CHAIN, Reason.UNTRUSTED_ROOT, f"{what}: chain does not end at a pinned root"
            )
        path.append(issuers[0])
    root = path[-1]
    if root.issuer != root.subject:
        raise EvidenceRejected(
            Stage.CHAIN, Reason.UNTRUSTED_ROOT, f"{what}: pinned root is not self-issued"
        )
    try:
        for i, cert in enumerate(path):
            name = f"{what} certificate {i}"
            _check_time(cert, at, name)
            issuer = path[i + 1] if i + 1 < len(path) else root
            if cert.issuer != issuer.subject:
                raise EvidenceRejected(
                    Stage.CHAIN, Reason.BAD_CHAIN, f"{name}: issuer name does not match"
                )
            _check_ca(issuer, i if i + 1 < len(path) else 0, name)
            verify_signed_by(cert, issuer, name)
    except ValueError as exc:  # cryptography parses extensions lazily
        raise EvidenceRejected(
            Stage.CHAIN, Reason.MALFORMED, f"{what}: malformed certificate"
        ) from exc
    return path


def order_chain(certs: Sequence[x509.Certificate], what: str) -> list[x509.Certificate]:
    """Order an unordered bag of certificates leaf first, following issuer names."""
    issuers = {c.issuer for c in certs if c.issuer != c.subject}
    leaves = [c for c in certs if c.subject not in issuers]
    if len(leaves) != 1:
        raise EvidenceRejected(
            Stage.CHAIN, Reason.BAD_CHAIN, f"{what}: certificates do not form one chain"
        )
    path = [leaves[0]]
    while path[-1].issuer != path[-1].subject:
        nxt = [c for c in certs if c.subject == path[-1].issuer and c not in path]
        if not nxt:
            break
        path.append(nxt[0])
    return path


def der_value(ext_value: bytes, tag: int) -> bytes:
    """Content of a single DER TLV with the given tag (short or long form length)."""
    if len(ext_value) < 2 or ext_value[0] != tag:
        raise EvidenceRejected(
            Stage.CHAIN, Reason.MALFORMED, "certificate extension is not the expected DER type"
        )
    n, pos = ext_value[1], 2
    if n & 0x80:
        k = n & 0x7F
        n, pos = int.from_bytes(ext_value[2 : 2 + k], "big"), 2 + k
    if pos + n != len(ext_value):
        raise EvidenceRejected(
            Stage.CHAIN, Reason.MALFORMED, "certificate extension has a bad DER length"
        )
    return ext_value[pos:]
