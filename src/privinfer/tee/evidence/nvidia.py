"""H100 SPDM 1.1 measurement verifier; trusts the pinned NVIDIA Device Identity CA.

Security assumption: the NVIDIA Device Identity CA (pinned) vouches for the GPU's device
certificate chain; the leaf key signs SPDM GET_MEASUREMENTS request || response (minus the
signature), so the verifier's nonce in the request is bound. Reference values (RIMs), OCSP
revocation and the GPU's confidential-computing / debug mode are NOT appraised here: the debug
state is reported as unknown (`Claims.debug is None`), which the default policy refuses.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from privinfer.tee.claims import Claims, EvidenceRejected, Reason, Stage
from privinfer.tee.evidence.dcap import Reader, ecdsa_verify
from privinfer.tee.evidence.x509chain import (
    NVIDIA_DEVICE_IDENTITY_CA_SHA256,
    anchors_from,
    as_utc,
    load_certificates,
    order_chain,
    verify_chain,
)
from privinfer.tee.policy import Policy

SPDM_11 = 0x11
GET_MEASUREMENTS = 0xE0
MEASUREMENTS = 0x60
DMTF_SPEC = 0x01
SIG_SIZE = 96  # ECDSA P-384 r || s


@dataclass(frozen=True)
class SpdmMeasurements:
    request_nonce: bytes
    responder_nonce: bytes
    record: bytes
    blocks: dict[int, tuple[int, bytes]]  # index -> (DMTF value type, value)
    opaque: bytes
    signed: bytes
    signature: bytes


def parse_spdm(data: bytes) -> SpdmMeasurements:
    """Parse GET_MEASUREMENTS request || MEASUREMENTS response (SPDM 1.1, signed) strictly."""
    r = Reader(data, "SPDM report")
    version, code, attrs = r.u8("request version"), r.u8("request code"), r.u8("request attributes")
    r.u8("measurement operation")
    if version != SPDM_11 or code != GET_MEASUREMENTS:
        raise EvidenceRejected(
            Stage.PARSE,
            Reason.UNSUPPORTED,
            f"not an SPDM 1.1 GET_MEASUREMENTS request ({version:#x}, {code:#x})",
        )
    if not attrs & 0x01:
        raise EvidenceRejected(
            Stage.PARSE, Reason.UNSUPPORTED, "the request did not ask for a signature"
        )
    request_nonce = r.take(32, "request nonce")
    r.u8("slot id")
    if r.u8("response version") != SPDM_11 or r.u8("response code") != MEASUREMENTS:
        raise EvidenceRejected(
            Stage.PARSE, Reason.MALFORMED, "response is not an SPDM 1.1 MEASUREMENTS message"
        )
    r.take(2, "response parameters")
    count = r.u8("number of blocks")
    record = r.take(r.u24("measurement record length"), "measurement record")
    responder_nonce = r.take(32, "response nonce")
    opaque = r.take(r.u16("opaque data length"), "opaque data")
    signed = data[: r.pos]
    signature = r.take(SIG_SIZE, "signature")
    r.end()
    blocks: dict[int, tuple[int, bytes]] = {}
    b = Reader(record, "measurement record")
    while b.pos < len(record):
        index, spec, size = b.u8("block index"), b.u8("block spec"), b.u16("block size")
        m = Reader(b.take(size, "measurement block"), "measurement block")
        if spec != DMTF_SPEC:
            raise EvidenceRejected(
                Stage.PARSE, Reason.UNSUPPORTED, f"measurement block {index} is not DMTF format"
            )
        vtype = m.u8("value type")
        value = m.take(m.u16("value size"), "measurement value")
        m.end(Reason.MALFORMED)
        if index in blocks:
            raise EvidenceRejected(
                Stage.PARSE, Reason.MALFORMED, f"measurement block {index} appears twice"
            )
        blocks[index] = (vtype, value)
    if len(blocks) != count:
        raise EvidenceRejected(
            Stage.PARSE, Reason.MALFORMED, f"{len(blocks)} measurement blocks, header says {count}"
        )
    return SpdmMeasurements(
        request_nonce, responder_nonce, record, blocks, opaque, signed, signature
    )


def verify_nvidia(
    data: bytes,
    *,
    certs: Sequence[bytes],
    policy: Policy,
    at: datetime | None = None,
    expected_report_data: bytes | None = None,
    roots: Sequence[bytes] | None = None,
) -> Claims:
    """Verify an H100 SPDM measurement report with its device chain (`certs`) and apply `policy`.

    `report_data` is the 32-byte nonce of the verifier's request; `measurement` is SHA-384 over
    the whole measurement record (all blocks in order); `components` holds each block's value.
    """
    from privinfer.tee.evidence.detect import finish

    at = as_utc(at)
    rep = parse_spdm(data)
    if not certs:
        raise EvidenceRejected(
            Stage.CHAIN, Reason.BAD_CHAIN, "NVIDIA verification needs the device certificate chain"
        )
    bag = [c for blob in certs for c in load_certificates(blob)]
    path = verify_chain(
        order_chain(bag, "NVIDIA"),
        anchors_from(roots, NVIDIA_DEVICE_IDENTITY_CA_SHA256),
        at,
        "NVIDIA",
    )
    key = path[0].public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp384r1":
        raise EvidenceRejected(Stage.CHAIN, Reason.UNSUPPORTED, "device key is not ECDSA P-384")
    if not ecdsa_verify(key, rep.signature, rep.signed, hashes.SHA384()):
        raise EvidenceRejected(
            Stage.SIGNATURE, Reason.BAD_SIGNATURE, "SPDM measurement signature does not verify"
        )
    claims = Claims(
        evidence_type="nvidia",
        measurement=hashlib.sha384(rep.record).digest(),
        signer=b"",
        product_id=0,
        svn=0,
        debug=None,  # SPDM 1.1 measurements carry no debug / devtools flag: unknown
        report_data=rep.request_nonce,
        components={f"index_{i}": v for i, (_, v) in sorted(rep.blocks.items())},
        extra={
            "spdm_version": "1.1",
            "blocks": len(rep.blocks),
            "responder_nonce": rep.responder_nonce.hex(),
            "opaque_data_len": len(rep.opaque),
            "device_certificate": path[0].subject.rfc4514_string(),
            "debug_state": "unknown",
        },
    )
    claims.checked += [
        f"device chain ({len(path)} certificates) to the pinned NVIDIA Device Identity CA, valid at {at:%Y-%m-%dT%H:%M:%SZ}",
        "GET_MEASUREMENTS request || response signed by the device key (ECDSA P-384, SHA-384)",
        f"{len(rep.blocks)} DMTF measurement blocks parsed; measurement = SHA-384 over the record",
    ]
    claims.not_checked += [
        "measurement blocks against NVIDIA reference values (RIMs); use the policy allowlist instead",
        "revocation of the device certificates (NVIDIA OCSP)",
        "GPU confidential-computing / devtools (debug) mode: no field of the SPDM report or the "
        "device certificates shows it, so debug is unknown (refused unless the policy allows it)",
        "opaque data (driver/VBIOS versions) is signed but not interpreted",
    ]
    return finish(claims, policy, expected_report_data, at)
