"""Detect the evidence type and run its verifier; detection grants nothing, the policy decides.

Security assumption: detection only picks which verifier runs; it grants nothing. Every verifier
then checks chain -> signature -> report_data binding -> policy on its own, and the relying
party's `Policy` (default-deny) decides.
"""

from __future__ import annotations

import binascii
import struct
from collections.abc import Sequence
from datetime import datetime

from privinfer.tee.claims import Claims, EvidenceRejected, Reason, Stage
from privinfer.tee.policy import Policy, check_binding, check_policy

EVIDENCE_TYPES = ("sgx", "tdx", "snp", "nvidia")


def finish(
    claims: Claims, policy: Policy, expected_report_data: bytes | None, at: datetime
) -> Claims:
    """Stages 3 and 4, shared by every hardware verifier: report_data binding, then policy."""
    if expected_report_data is not None:
        if len(expected_report_data) > len(claims.report_data):
            raise EvidenceRejected(
                Stage.BINDING, Reason.REPORT_DATA_MISMATCH, "expected value longer than report_data"
            )
        check_binding(claims, expected_report_data)
        claims.checked.append("report_data equals the expected value (binding)")
    else:
        claims.not_checked.append("report_data binding: no expected value was given")
    check_policy(claims, policy, now=at)
    return claims


def maybe_hex(data: bytes) -> bytes:
    """Evidence given as hex text (as NVIDIA's tools write it) is decoded; bytes pass through."""
    text = data.strip()
    if text and len(text) % 2 == 0 and all(c in b"0123456789abcdefABCDEF" for c in text):
        try:
            return binascii.unhexlify(text)
        except binascii.Error:
            return data
    return data


def detect_type(data: bytes) -> str:
    """Name the evidence format of `data` ("sgx", "tdx", "snp", "nvidia") from its header."""
    if len(data) >= 8:
        version, key_type, tee_type = struct.unpack_from("<HHI", data)
        if key_type == 2 and (version == 3 or (version == 4 and tee_type == 0)):
            return "sgx"
        if key_type == 2 and version in (4, 5) and tee_type == 0x81:
            return "tdx"
    if len(data) >= 0x38:
        version, algo = struct.unpack_from("<I", data)[0], struct.unpack_from("<I", data, 0x34)[0]
        if 2 <= version <= 5 and algo == 1:
            return "snp"
    if len(data) >= 2 and data[0] in (0x10, 0x11, 0x12, 0x13) and data[1] == 0xE0:
        return "nvidia"
    raise EvidenceRejected(Stage.PARSE, Reason.UNSUPPORTED, "evidence format not recognised")


def verify_evidence(
    data: bytes,
    *,
    evidence_type: str | None = None,
    certs: list[bytes] | None = None,
    at: datetime | None = None,
    policy: Policy,
    expected_report_data: bytes | None = None,
    roots: Sequence[bytes] | None = None,
    collateral: bytes | None = None,
) -> Claims:
    """Verify hardware evidence of any supported type and return its Claims, or raise.

    `certs` are certificates the evidence does not carry (SEV-SNP: VCEK, ASK, ARK; NVIDIA: the
    device chain), PEM or DER. `roots` replaces the built-in pinned vendor root. `collateral`
    is Intel DCAP collateral JSON (SGX and TDX).
    """
    from privinfer.tee.evidence.nvidia import verify_nvidia
    from privinfer.tee.evidence.sgx import verify_sgx
    from privinfer.tee.evidence.snp import verify_snp
    from privinfer.tee.evidence.tdx import verify_tdx

    if evidence_type is None or evidence_type == "nvidia":
        data = maybe_hex(data)
    kind = evidence_type or detect_type(data)
    if kind not in EVIDENCE_TYPES:
        raise EvidenceRejected(Stage.PARSE, Reason.UNSUPPORTED, f"unknown evidence type {kind!r}")
    if collateral is not None and kind not in ("sgx", "tdx"):
        raise EvidenceRejected(
            Stage.PARSE, Reason.UNSUPPORTED, "collateral is only used for SGX and TDX quotes"
        )
    common = {
        "policy": policy,
        "at": at,
        "expected_report_data": expected_report_data,
        "roots": roots,
    }
    if kind == "sgx":
        return verify_sgx(data, collateral=collateral, **common)  # type: ignore[arg-type]
    if kind == "tdx":
        return verify_tdx(data, collateral=collateral, **common)  # type: ignore[arg-type]
    if kind == "snp":
        return verify_snp(data, certs=certs or [], **common)  # type: ignore[arg-type]
    return verify_nvidia(data, certs=certs or [], **common)  # type: ignore[arg-type]
