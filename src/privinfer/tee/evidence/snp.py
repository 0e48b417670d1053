"""SEV-SNP report verifier (ARK -> ASK -> VCEK, ECDSA P-384); trusts the pinned AMD ARK.

Security assumption: the AMD root key (ARK, Milan pinned by default) vouches via the ASK for the
chip-unique VCEK, whose hwID and TCB extensions must match the report; the VCEK signs the first
0x2A0 bytes of the report. AMD's TCB appraisal (is this microcode/firmware current?) and
certificate revocation (AMD KDS CRL) are NOT checked here.
"""

from __future__ import annotations

import hmac
import struct
from collections.abc import Sequence
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from privinfer.tee.claims import Claims, EvidenceRejected, Reason, Stage
from privinfer.tee.evidence.dcap import ecdsa_verify
from privinfer.tee.evidence.x509chain import (
    AMD_ARK_MILAN_SHA256,
    anchors_from,
    as_utc,
    der_value,
    load_certificates,
    order_chain,
    verify_chain,
)
from privinfer.tee.policy import Policy

REPORT_SIZE = 0x4A0
SIGNED_SIZE = 0x2A0
POLICY_DEBUG = 1 << 19
AUTHOR_KEY_EN = 1
_AMD = "1.3.6.1.4.1.3704.1."
# VCEK extension OID -> byte of REPORTED_TCB it must equal (boot loader, TEE, SNP, microcode).
_TCB_OIDS = {_AMD + "3.1": 0, _AMD + "3.2": 1, _AMD + "3.3": 6, _AMD + "3.8": 7}
_HWID_OID = _AMD + "4"


def _u32(d: bytes, off: int) -> int:
    return int(struct.unpack_from("<I", d, off)[0])


def _u64(d: bytes, off: int) -> int:
    return int(struct.unpack_from("<Q", d, off)[0])


def claims_from_report(rep: bytes) -> Claims:
    """Identity fields of a 1184-byte SNP report (not yet verified)."""
    flags = _u32(rep, 0x48)
    guest_policy = _u64(rep, 0x08)
    id_key, author_key = rep[0xE0:0x110], rep[0x110:0x140]
    return Claims(
        evidence_type="snp",
        measurement=rep[0x90:0xC0],
        signer=author_key if flags & AUTHOR_KEY_EN else id_key,
        product_id=0,
        svn=_u32(rep, 0x04),
        debug=bool(guest_policy & POLICY_DEBUG),
        report_data=rep[0x50:0x90],
        components={
            "measurement": rep[0x90:0xC0],
            "host_data": rep[0xC0:0xE0],
            "id_key_digest": id_key,
            "author_key_digest": author_key,
            "family_id": rep[0x10:0x20],
            "image_id": rep[0x20:0x30],
            "report_id": rep[0x140:0x160],
            "chip_id": rep[0x1A0:0x1E0],
            "reported_tcb": rep[0x180:0x188],
        },
        extra={
            "version": _u32(rep, 0x00),
            "guest_policy": f"{guest_policy:#x}",
            "vmpl": _u32(rep, 0x30),
            "platform_info": f"{_u64(rep, 0x40):#x}",
            "reported_tcb": f"{_u64(rep, 0x180):#018x}",
        },
    )


def _check_vcek_matches(vcek: x509.Certificate, rep: bytes) -> None:
    """The VCEK is specific to one chip and one TCB: both must be the report's."""
    try:
        exts = {e.oid.dotted_string: e.value for e in vcek.extensions}
    except ValueError as exc:
        raise EvidenceRejected(
            Stage.CHAIN, Reason.MALFORMED, "VCEK extensions do not parse"
        ) from exc

    def raw(oid: str) -> bytes:
        v = exts.get(oid)
        if not isinstance(v, x509.UnrecognizedExtension):
            raise EvidenceRejected(Stage.CHAIN, Reason.BAD_CHAIN, f"VCEK lacks AMD extension {oid}")
        return v.value

    chip_id = rep[0x1A0:0x1E0]
    hwid = raw(_HWID_OID)  # AMD puts the 64 raw bytes in the extension (some tools wrap them)
    if len(hwid) == 66:
        hwid = der_value(hwid, 0x04)
    if any(chip_id) and not hmac.compare_digest(hwid, chip_id):
        raise EvidenceRejected(
            Stage.CHAIN, Reason.BAD_CHAIN, "VCEK hwID is not the report's CHIP_ID"
        )
    tcb = rep[0x180:0x188]
    for oid, idx in _TCB_OIDS.items():
        if int.from_bytes(der_value(raw(oid), 0x02), "big") != tcb[idx]:
            raise EvidenceRejected(
                Stage.CHAIN, Reason.BAD_CHAIN, "VCEK TCB does not match REPORTED_TCB"
            )


def verify_snp(
    data: bytes,
    *,
    certs: Sequence[bytes],
    policy: Policy,
    at: datetime | None = None,
    expected_report_data: bytes | None = None,
    roots: Sequence[bytes] | None = None,
) -> Claims:
    """Verify an SEV-SNP report with its VCEK/ASK/ARK (`certs`) at `at` and apply `policy`."""
    from privinfer.tee.evidence.detect import finish

    at = as_utc(at)
    if len(data) < REPORT_SIZE:
        raise EvidenceRejected(
            Stage.PARSE, Reason.TRUNCATED, f"SNP report is {len(data)} bytes, needs {REPORT_SIZE}"
        )
    if len(data) > REPORT_SIZE:
        raise EvidenceRejected(
            Stage.PARSE,
            Reason.TRAILING_BYTES,
            f"{len(data) - REPORT_SIZE} bytes after the SNP report",
        )
    version, algo = _u32(data, 0), _u32(data, 0x34)
    if not 2 <= version <= 5 or algo != 1:
        raise EvidenceRejected(
            Stage.PARSE,
            Reason.UNSUPPORTED,
            f"SNP report version {version}, signature algorithm {algo}",
        )
    if (_u32(data, 0x48) >> 2) & 0x7 != 0:
        raise EvidenceRejected(
            Stage.PARSE, Reason.UNSUPPORTED, "SNP report not signed by a VCEK (VLEK or none)"
        )
    if not certs:
        raise EvidenceRejected(
            Stage.CHAIN,
            Reason.BAD_CHAIN,
            "SNP verification needs the VCEK, ASK and ARK certificates",
        )
    bag = [c for blob in certs for c in load_certificates(blob)]
    path = verify_chain(
        order_chain(bag, "AMD"), anchors_from(roots, AMD_ARK_MILAN_SHA256), at, "AMD"
    )
    vcek = path[0]
    key = vcek.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp384r1":
        raise EvidenceRejected(Stage.CHAIN, Reason.UNSUPPORTED, "VCEK key is not ECDSA P-384")
    _check_vcek_matches(vcek, data)
    sig = data[SIGNED_SIZE : SIGNED_SIZE + 144]
    if any(sig[48:72]) or any(sig[120:144]) or any(data[SIGNED_SIZE + 144 :]):
        raise EvidenceRejected(
            Stage.PARSE, Reason.MALFORMED, "SNP signature padding or reserved bytes are not zero"
        )
    if not ecdsa_verify(key, sig, data[:SIGNED_SIZE], hashes.SHA384(), big_endian=False):
        raise EvidenceRejected(
            Stage.SIGNATURE, Reason.BAD_SIGNATURE, "SNP report signature does not verify"
        )
    claims = claims_from_report(data)
    claims.checked += [
        f"AMD chain VCEK -> ASK -> ARK ({len(path)} certificates, RSA-PSS) to the pinned ARK, valid at {at:%Y-%m-%dT%H:%M:%SZ}",
        "VCEK hwID equals CHIP_ID and its TCB extensions equal REPORTED_TCB",
        "report bytes [0, 0x2A0) signed by the VCEK (ECDSA P-384, SHA-384)",
    ]
    claims.not_checked += [
        "TCB appraisal: whether REPORTED_TCB is current per AMD (no AMD TCB collateral offline)",
        "revocation of the ASK/VCEK (AMD KDS CRL)",
        "ID block / author key signatures (only their digests are reported, as the signer)",
        "freshness: the report carries no timestamp; only a nonce in report_data shows freshness",
    ]
    return finish(claims, policy, expected_report_data, at)
