"""TDX quote v4/v5 verifier (chain, signature, binding, policy); trusts the pinned Intel root.

Security assumption: as for SGX DCAP, the pinned Intel SGX Root CA vouches (via PCK and Intel's
TD quoting enclave) for the attestation key that signed the TD report. With Intel's TDX
collateral the platform TCB level (PCK components and TEE_TCB_SVN), the TDX module identity and
its TCB status are appraised; the policy decides which statuses it accepts.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from privinfer.tee.claims import Claims, EvidenceRejected, Reason, Stage
from privinfer.tee.evidence import dcap
from privinfer.tee.evidence.collateral import apply_collateral
from privinfer.tee.evidence.x509chain import INTEL_SGX_ROOT_SHA256, anchors_from, as_utc
from privinfer.tee.policy import Policy

_FIELDS = {  # name: (offset, size) in the TD report body
    "tee_tcb_svn": (0, 16),
    "mrseam": (16, 48),
    "mrsignerseam": (64, 48),
    "seam_attributes": (112, 8),
    "td_attributes": (120, 8),
    "xfam": (128, 8),
    "mrtd": (136, 48),
    "mrconfigid": (184, 48),
    "mrowner": (232, 48),
    "mrownerconfig": (280, 48),
    "rtmr0": (328, 48),
    "rtmr1": (376, 48),
    "rtmr2": (424, 48),
    "rtmr3": (472, 48),
    "report_data": (520, 64),
    "tee_tcb_svn2": (584, 16),  # TD 1.5 only
    "mrservicetd": (600, 48),  # TD 1.5 only
}


def claims_from_body(body: bytes) -> Claims:
    """Read the identity fields of a TD report body (584 or 648 bytes; not yet verified)."""
    f = {k: body[o : o + n] for k, (o, n) in _FIELDS.items() if o + n <= len(body)}
    return Claims(
        evidence_type="tdx",
        measurement=f["mrtd"],
        signer=f["mrsignerseam"],
        product_id=0,
        svn=0,
        debug=bool(f["td_attributes"][0] & 0x01),
        report_data=f["report_data"],
        components={k: v for k, v in f.items() if k != "report_data"},
    )


def verify_tdx(
    data: bytes,
    *,
    policy: Policy,
    at: datetime | None = None,
    expected_report_data: bytes | None = None,
    roots: Sequence[bytes] | None = None,
    collateral: bytes | None = None,
) -> Claims:
    """Verify a TDX quote (v4 or v5) at time `at` (default now) and apply `policy`.

    `collateral` is Intel's TDX collateral (TCB info id "TDX", QE identity "TD_QE") as JSON."""
    from privinfer.tee.evidence.detect import finish

    at = as_utc(at)
    q = dcap.parse_quote(data)
    if q.tee_type != dcap.TEE_TDX or q.body_type not in (2, 3):
        raise EvidenceRejected(Stage.PARSE, Reason.UNSUPPORTED, "not a TDX quote")
    anchors = anchors_from(roots, INTEL_SGX_ROOT_SHA256)
    checked, path = dcap.verify_quote(q, anchors, at)
    claims = claims_from_body(q.body)
    claims.extra.update(
        {
            "quote_version": q.version,
            "body_type": q.body_type,
            "padding_bytes": q.padding_len,
        }
    )
    claims.checked.extend(checked)
    claims.not_checked.extend(dcap.NOT_CHECKED)
    claims.not_checked.append(
        "MRSEAM / TDX module identity and TEE_TCB_SVN against Intel's TDX TCB info"
    )
    claims.not_checked.append(
        "RTMR replay against an event log (RTMRs are reported in components only)"
    )
    if collateral is not None:
        apply_collateral(claims, collateral, q, path, anchors, at)
    return finish(claims, policy, expected_report_data, at)
