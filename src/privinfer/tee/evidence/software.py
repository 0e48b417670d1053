"""Verifier for software-platform quotes: parse -> chain to a pinned root -> signature -> binding -> policy.

Security assumption: the pinned root certificate reaches the client out of band. A passing quote
proves only that a holder of the software platform's attestation key signed it; anyone who can
read the platform directory (root on the host) can sign any identity. `Claims.not_checked` says so.

Quote layout, version 1 (big-endian; total length must match exactly, at most 64 KiB):

    0     4  magic          b"PIQT"
    4     2  version        u16 = 1
    6     2  sig_alg        u16 = 1 (ECDSA P-384 with SHA-384)
    8   248  identity       EnclaveIdentity.to_bytes() (see measurement.py)
    256  64  report_data    bytes bound by the enclave (see attestation.py)
    320   8  timestamp      u64 milliseconds since the Unix epoch (UTC), when quoted
    328  96  signature      r || s (48 bytes each) over bytes [0, 328) with the attestation key
    424   1  cert_count     u8, 1..4, leaf (attestation key) first, pinned root last
    425 ...  certs          cert_count times: u32 length (1..16384) || DER X.509 certificate
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from privinfer.tee.claims import Claims, EvidenceRejected, Reason, Stage
from privinfer.tee.measurement import IDENTITY_LEN, EnclaveIdentity
from privinfer.tee.policy import Policy, check_binding, check_policy

EVIDENCE_TYPE = "privinfer-software-v1"
MAGIC = b"PIQT"
VERSION = 1
SIG_ALG_ECDSA_P384_SHA384 = 1
HEADER = struct.Struct(">4sHH")
REPORT_DATA_LEN = 64
SIGNED_LEN = HEADER.size + IDENTITY_LEN + REPORT_DATA_LEN + 8
SIGNATURE_LEN = 96
MAX_CERTS = 4
MAX_CERT_LEN = 16384
MAX_QUOTE_LEN = 65536

NOT_CHECKED = [
    "hardware root of trust: none (software platform); whoever can read the platform directory"
    " (root on the host) can produce quotes for any identity",
    "signer identity is declared by the launcher, not checked against an enclave signature",
    "revocation of the attestation key (no CRL or status service)",
]


@dataclass(frozen=True)
class ParsedQuote:
    """A syntactically valid quote; nothing in it is verified yet."""

    version: int
    identity: EnclaveIdentity
    report_data: bytes
    issued_at: datetime
    signature: bytes
    certs: tuple[x509.Certificate, ...]
    signed_body: bytes


def _reject(stage: Stage, reason: Reason, detail: str = "") -> EvidenceRejected:
    return EvidenceRejected(stage, reason, detail)


def parse_quote(data: bytes) -> ParsedQuote:
    """Parse a quote, checking every length; truncated or trailing bytes are rejected."""
    if len(data) > MAX_QUOTE_LEN:
        raise _reject(Stage.PARSE, Reason.MALFORMED, "quote too large")
    if len(data) < SIGNED_LEN + SIGNATURE_LEN + 1:
        raise _reject(Stage.PARSE, Reason.TRUNCATED, f"{len(data)} bytes")
    magic, version, sig_alg = HEADER.unpack_from(data, 0)
    if magic != MAGIC:
        raise _reject(Stage.PARSE, Reason.MALFORMED, "bad magic")
    if version != VERSION or sig_alg != SIG_ALG_ECDSA_P384_SHA384:
        raise _reject(Stage.PARSE, Reason.UNSUPPORTED, f"version {version}, sig_alg {sig_alg}")
    off = HEADER.size
    try:
        identity = EnclaveIdentity.from_bytes(data[off : off + IDENTITY_LEN])
    except ValueError as e:
        raise _reject(Stage.PARSE, Reason.MALFORMED, str(e)) from None
    off += IDENTITY_LEN
    report_data = data[off : off + REPORT_DATA_LEN]
    off += REPORT_DATA_LEN
    (ms,) = struct.unpack_from(">Q", data, off)
    off += 8
    try:
        issued_at = datetime.fromtimestamp(ms / 1000, UTC)
    except (OverflowError, ValueError, OSError):
        raise _reject(Stage.PARSE, Reason.MALFORMED, "bad timestamp") from None
    signature = data[off : off + SIGNATURE_LEN]
    off += SIGNATURE_LEN
    count = data[off]
    off += 1
    if not 1 <= count <= MAX_CERTS:
        raise _reject(Stage.PARSE, Reason.MALFORMED, f"cert count {count}")
    certs = []
    for _ in range(count):
        if off + 4 > len(data):
            raise _reject(Stage.PARSE, Reason.TRUNCATED, "cert length")
        (n,) = struct.unpack_from(">I", data, off)
        off += 4
        if not 1 <= n <= MAX_CERT_LEN:
            raise _reject(Stage.PARSE, Reason.MALFORMED, f"cert length {n}")
        if off + n > len(data):
            raise _reject(Stage.PARSE, Reason.TRUNCATED, "cert body")
        try:
            certs.append(x509.load_der_x509_certificate(data[off : off + n]))
        except ValueError:
            raise _reject(Stage.PARSE, Reason.MALFORMED, "cert DER") from None
        off += n
    if off != len(data):
        raise _reject(Stage.PARSE, Reason.TRAILING_BYTES, f"{len(data) - off} bytes")
    return ParsedQuote(
        version, identity, report_data, issued_at, signature, tuple(certs), data[:SIGNED_LEN]
    )


def load_root(root_cert: x509.Certificate | bytes) -> x509.Certificate:
    """Accept the pinned root as a certificate object or PEM bytes."""
    if isinstance(root_cert, x509.Certificate):
        return root_cert
    return x509.load_pem_x509_certificate(root_cert)


def _check_validity(cert: x509.Certificate, now: datetime, what: str) -> None:
    if now < cert.not_valid_before_utc:
        raise _reject(Stage.CHAIN, Reason.NOT_YET_VALID, what)
    if now > cert.not_valid_after_utc:
        raise _reject(Stage.CHAIN, Reason.EXPIRED, what)


def _check_chain(
    certs: tuple[x509.Certificate, ...], root: x509.Certificate, now: datetime
) -> ec.EllipticCurvePublicKey:
    """Chain leaf -> ... -> pinned root, each link signed by the next, all valid at `now`."""
    if certs[-1] != root:
        raise _reject(Stage.CHAIN, Reason.UNTRUSTED_ROOT, "last certificate is not the pinned root")
    _check_validity(root, now, "root")
    for i in range(len(certs) - 1):
        child, parent = certs[i], certs[i + 1]
        try:
            child.verify_directly_issued_by(parent)
        except (InvalidSignature, ValueError, TypeError):
            raise _reject(Stage.CHAIN, Reason.BAD_CHAIN, f"link {i}") from None
        _check_validity(child, now, "leaf" if i == 0 else f"intermediate {i}")
        try:
            bc = parent.extensions.get_extension_for_class(x509.BasicConstraints).value
        except x509.ExtensionNotFound:
            raise _reject(Stage.CHAIN, Reason.BAD_CHAIN, "issuer is not a CA") from None
        if not bc.ca:
            raise _reject(Stage.CHAIN, Reason.BAD_CHAIN, "issuer is not a CA")
    leaf = certs[0]
    try:
        ku = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        raise _reject(Stage.CHAIN, Reason.BAD_CHAIN, "leaf has no key usage") from None
    if not ku.digital_signature:
        raise _reject(Stage.CHAIN, Reason.BAD_CHAIN, "leaf may not sign")
    key = leaf.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp384r1":
        raise _reject(Stage.CHAIN, Reason.UNSUPPORTED, "attestation key must be ECDSA P-384")
    return key


def verify_software_quote(
    quote: bytes,
    *,
    root_cert: x509.Certificate | bytes,
    expected_report_data: bytes,
    policy: Policy,
    now: datetime | None = None,
) -> Claims:
    """Run all four stages on a software-platform quote; return Claims or raise EvidenceRejected.

    `now` is the time at which the chain is checked and the quote's age measured (default: now).
    `expected_report_data` is the 64 bytes the verifier recomputed (attestation.report_data).
    """
    now = now or datetime.now(UTC)
    if len(expected_report_data) != REPORT_DATA_LEN:
        raise ValueError("expected_report_data must be 64 bytes")
    root = load_root(root_cert)
    q = parse_quote(quote)
    ak = _check_chain(q.certs, root, now)
    r = int.from_bytes(q.signature[:48], "big")
    s = int.from_bytes(q.signature[48:], "big")
    try:
        ak.verify(encode_dss_signature(r, s), q.signed_body, ec.ECDSA(hashes.SHA384()))
    except InvalidSignature:
        raise _reject(Stage.SIGNATURE, Reason.BAD_SIGNATURE) from None
    root_fp = root.fingerprint(hashes.SHA256()).hex()
    ident = q.identity
    claims = Claims(
        evidence_type=EVIDENCE_TYPE,
        measurement=ident.measurement,
        signer=ident.signer,
        product_id=ident.product_id,
        svn=ident.svn,
        debug=ident.debug,
        report_data=q.report_data,
        issued_at=q.issued_at,
        components=dict(ident.components),
        extra={"root_sha256": root_fp, "quote_sha256": hashlib.sha256(quote).hexdigest()},
        checked=[
            "parse: layout v1, exact length, measurement consistent with components",
            f"chain: attestation key certificate -> pinned root {root_fp[:16]}, valid at {now.isoformat()}",
            "signature: ECDSA P-384/SHA-384 over header, identity, report_data, timestamp",
        ],
        not_checked=list(NOT_CHECKED),
    )
    check_binding(claims, expected_report_data)
    claims.checked.append("binding: report_data equals the recomputed value")
    check_policy(claims, policy, now=now)
    return claims
