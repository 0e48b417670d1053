"""Intel DCAP quote parser and PCK/QE signature chain; trusts the pinned Intel root and Intel's QE.

Security assumption: the Intel SGX Root CA is pinned; trust flows root -> PCK platform CA -> PCK
leaf -> quoting-enclave (QE) report -> attestation key -> quote. The QE must be Intel's (its
MRSIGNER is pinned) and not in debug mode. TCB status (is this platform patched?) is NOT
appraised here: that needs Intel's TCB info collateral (pass `collateral=` to `sgx.verify_sgx`).
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from privinfer.tee.claims import EvidenceRejected, Reason, Stage
from privinfer.tee.evidence.x509chain import Anchor, load_certificates, verify_chain

ECDSA_P256 = 2
TEE_SGX = 0x00000000
TEE_TDX = 0x00000081
SGX_BODY = 384
TD10_BODY = 584
TD15_BODY = 648
QE_CERT_DATA = 6  # QE report certification data (v4/v5)
PCK_CHAIN_PEM = 5
# Identity of Intel's quoting enclaves as published in Intel's QE identity collateral:
# (MRSIGNER, ISVPRODID) of QE3 for SGX quotes and of the TD QE for TDX quotes; attributes must
# equal 0x11.. under mask 0xfbff.. (so DEBUG, bit 1, must be clear). The PCK signs the report of
# any enclave allowed the provisioning key, which a platform owner can grant to its own enclave:
# only a report from Intel's QE makes the attestation key Intel's.
QE_IDENTITY = {
    TEE_SGX: (bytes.fromhex("8c4f5775d796503e96137f77c68a829a0056ac8ded70140b081b094490c57bff"), 1),
    TEE_TDX: (bytes.fromhex("dc9e2a7c6f948f17474e34a7fc43ed030f7c1563f1babddf6340c82e0e54a8c5"), 2),
}
QE_ATTRIBUTES = bytes.fromhex("11000000000000000000000000000000")
QE_ATTRIBUTES_MASK = bytes.fromhex("fbffffffffffffff0000000000000000")


class Reader:
    """Bounds-checked little-endian reader: every short read is a named rejection."""

    def __init__(self, data: bytes, what: str) -> None:
        self.data, self.pos, self.what = data, 0, what

    def take(self, n: int, field: str) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise EvidenceRejected(
                Stage.PARSE, Reason.TRUNCATED, f"{self.what} ends inside {field}"
            )
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def u8(self, field: str) -> int:
        return self.take(1, field)[0]

    def u16(self, field: str) -> int:
        return int(struct.unpack("<H", self.take(2, field))[0])

    def u24(self, field: str) -> int:
        return int.from_bytes(self.take(3, field), "little")

    def u32(self, field: str) -> int:
        return int(struct.unpack("<I", self.take(4, field))[0])

    def end(self, reason: Reason = Reason.TRAILING_BYTES) -> None:
        if self.pos != len(self.data):
            extra = len(self.data) - self.pos
            raise EvidenceRejected(Stage.PARSE, reason, f"{extra} bytes after the {self.what}")

    def zero_padding(self) -> int:
        """Length of the rest, which must be all zero bytes (a quote buffer's padding)."""
        rest = self.data[self.pos :]
        if any(rest):
            first = next(i for i, b in enumerate(rest) if b)
            raise EvidenceRejected(
                Stage.PARSE,
                Reason.TRAILING_BYTES,
                f"{len(rest)} bytes after the {self.what}, non-zero at offset {first}",
            )
        self.pos = len(self.data)
        return len(rest)


@dataclass(frozen=True)
class DcapQuote:
    version: int
    tee_type: int
    qe_svn: int
    pce_svn: int
    body_type: int  # 1 SGX enclave, 2 TD 1.0, 3 TD 1.5
    body: bytes
    signed: bytes  # everything the attestation key signs: header (+ body descriptor) + body
    signature: bytes
    attest_key: bytes
    qe_report: bytes
    qe_report_sig: bytes
    qe_auth: bytes
    cert_type: int
    cert_data: bytes
    padding_len: int = 0  # zero bytes after the signature data (quote buffers often carry them)


def parse_quote(data: bytes) -> DcapQuote:
    """Parse a DCAP quote strictly; raise EvidenceRejected (truncated, trailing, unsupported).

    Zero bytes after the signature data are accepted as buffer padding (their count is
    `padding_len`); any non-zero byte there is `trailing-bytes`. Nothing inside the signature
    data may be left over (`malformed`)."""
    r = Reader(data, "DCAP quote")
    version = r.u16("header version")
    key_type = r.u16("attestation key type")
    tee_type = r.u32("TEE type")
    qe_svn = r.u16("QE SVN")
    pce_svn = r.u16("PCE SVN")
    r.take(36, "header")
    if version not in (3, 4, 5):
        raise EvidenceRejected(Stage.PARSE, Reason.UNSUPPORTED, f"DCAP quote version {version}")
    if key_type != ECDSA_P256:
        raise EvidenceRejected(Stage.PARSE, Reason.UNSUPPORTED, f"attestation key type {key_type}")
    if version == 3 or (version == 4 and tee_type == TEE_SGX):
        body_type, size = 1, SGX_BODY
    elif version == 4 and tee_type == TEE_TDX:
        body_type, size = 2, TD10_BODY
    elif version == 5:
        body_type = r.u16("body type")
        size = r.u32("body size")
        want = {1: SGX_BODY, 2: TD10_BODY, 3: TD15_BODY}.get(body_type)
        if want is None or want != size:
            raise EvidenceRejected(
                Stage.PARSE, Reason.UNSUPPORTED, f"v5 body type {body_type} size {size}"
            )
    else:
        raise EvidenceRejected(Stage.PARSE, Reason.UNSUPPORTED, f"TEE type {tee_type:#x}")
    body = r.take(size, "report body")
    signed = data[: r.pos]
    sig_len = r.u32("signature data length")
    s = Reader(r.take(sig_len, "signature data"), "signature data")
    padding_len = r.zero_padding()
    signature = s.take(64, "quote signature")
    attest_key = s.take(64, "attestation key")
    if version >= 4:
        outer_type = s.u16("certification data type")
        if outer_type != QE_CERT_DATA:
            raise EvidenceRejected(
                Stage.PARSE, Reason.UNSUPPORTED, f"certification data type {outer_type}"
            )
        s = Reader(
            s.take(s.u32("certification data size"), "certification data"), "QE certification data"
        )
    qe_report = s.take(SGX_BODY, "QE report")
    qe_report_sig = s.take(64, "QE report signature")
    qe_auth = s.take(s.u16("QE auth data size"), "QE auth data")
    cert_type = s.u16("PCK certification data type")
    cert_data = s.take(s.u32("PCK certification data size"), "PCK certification data")
    s.end(Reason.MALFORMED)
    return DcapQuote(
        version,
        tee_type,
        qe_svn,
        pce_svn,
        body_type,
        body,
        signed,
        signature,
        attest_key,
        qe_report,
        qe_report_sig,
        qe_auth,
        cert_type,
        cert_data,
        padding_len,
    )


def ecdsa_verify(
    key: ec.EllipticCurvePublicKey,
    raw_sig: bytes,
    msg: bytes,
    algo: hashes.HashAlgorithm,
    big_endian: bool = True,
) -> bool:
    """Verify a raw r||s ECDSA signature (fixed-width halves)."""
    half = len(raw_sig) // 2
    order = "big" if big_endian else "little"
    r = int.from_bytes(raw_sig[:half], order)
    s = int.from_bytes(raw_sig[half:], order)
    try:
        key.verify(encode_dss_signature(r, s), msg, ec.ECDSA(algo))
    except InvalidSignature:
        return False
    return True


def p256_key(raw: bytes, what: str) -> ec.EllipticCurvePublicKey:
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x04" + raw)
    except ValueError as exc:
        raise EvidenceRejected(
            Stage.SIGNATURE, Reason.BAD_SIGNATURE, f"{what} is not a P-256 point"
        ) from exc


def check_qe_identity(q: DcapQuote) -> None:
    """The QE report must come from Intel's quoting enclave for this TEE, not in debug mode."""
    mrsigner, prod_id = QE_IDENTITY[q.tee_type if q.body_type != 1 else TEE_SGX]
    rep = q.qe_report
    if (
        not hmac.compare_digest(rep[128:160], mrsigner)
        or int.from_bytes(rep[256:258], "little") != prod_id
    ):
        raise EvidenceRejected(Stage.CHAIN, Reason.BAD_CHAIN, "quoting enclave is not Intel's")
    masked = bytes(a & m for a, m in zip(rep[48:64], QE_ATTRIBUTES_MASK, strict=True))
    if masked != QE_ATTRIBUTES or rep[16:20] != bytes(4):
        raise EvidenceRejected(
            Stage.CHAIN,
            Reason.BAD_CHAIN,
            "quoting enclave attributes (debug?) not as Intel publishes",
        )


def verify_quote(q: DcapQuote, anchors: Sequence[Anchor], at: datetime) -> tuple[list[str], list]:
    """Chain + signatures of a parsed quote; returns (what was checked, PCK certificate path)."""
    if q.cert_type != PCK_CHAIN_PEM:
        raise EvidenceRejected(
            Stage.CHAIN,
            Reason.UNSUPPORTED,
            f"PCK certification data type {q.cert_type} (need the PEM chain)",
        )
    path = verify_chain(load_certificates(q.cert_data), anchors, at, "PCK")
    pck_key = path[0].public_key()
    if not isinstance(pck_key, ec.EllipticCurvePublicKey) or pck_key.curve.name != "secp256r1":
        raise EvidenceRejected(Stage.CHAIN, Reason.UNSUPPORTED, "PCK key is not ECDSA P-256")
    if not ecdsa_verify(pck_key, q.qe_report_sig, q.qe_report, hashes.SHA256()):
        raise EvidenceRejected(
            Stage.SIGNATURE, Reason.BAD_SIGNATURE, "QE report not signed by the PCK key"
        )
    bound = hashlib.sha256(q.attest_key + q.qe_auth).digest() + bytes(32)
    if not hmac.compare_digest(q.qe_report[320:384], bound):
        raise EvidenceRejected(
            Stage.SIGNATURE, Reason.BAD_SIGNATURE, "QE report does not bind the attestation key"
        )
    check_qe_identity(q)
    if not ecdsa_verify(
        p256_key(q.attest_key, "attestation key"), q.signature, q.signed, hashes.SHA256()
    ):
        raise EvidenceRejected(
            Stage.SIGNATURE, Reason.BAD_SIGNATURE, "quote signature does not verify"
        )
    checked = [
        f"PCK certificate chain ({len(path)} certificates) to the pinned Intel SGX Root CA, valid at {at:%Y-%m-%dT%H:%M:%SZ}",
        "QE report signed by the PCK key (ECDSA P-256)",
        "QE report data = SHA-256(attestation key || QE auth data)",
        "quoting enclave is Intel's (MRSIGNER, ISVPRODID, attributes incl. debug clear, as in Intel's QE identity)",
        "quote header and body signed by the attestation key (ECDSA P-256)",
    ]
    return checked, path


NOT_CHECKED = [
    "TCB status of the platform (needs Intel TCB info collateral, which was not given)",
    "revocation of the PCK certificates (Intel PCK / root CRLs)",
    "QE identity TCB level (QE ISVSVN against Intel's QE identity collateral)",
    "freshness: the quote carries no timestamp; only a nonce in report_data shows freshness",
]
