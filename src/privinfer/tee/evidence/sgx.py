"""SGX DCAP quote v3 verifier (chain, signature, binding, policy); trusts the pinned Intel root.

Security assumption: the Intel SGX Root CA (pinned) vouches for the PCK key, which vouches for
Intel's quoting enclave, which vouches for the attestation key that signed this quote. Platform
TCB status and revocation are appraised only when Intel collateral is given
(`collateral.apply_collateral`); the policy then decides which TCB statuses it accepts, and by
default refuses a quote whose TCB was not appraised.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from privinfer.tee.claims import Claims, EvidenceRejected, Reason, Stage
from privinfer.tee.evidence import dcap
from privinfer.tee.evidence.collateral import apply_collateral
from privinfer.tee.evidence.x509chain import INTEL_SGX_ROOT_SHA256, anchors_from, as_utc
from privinfer.tee.policy import Policy


def claims_from_body(body: bytes) -> Claims:
    """Read the identity fields of a 384-byte SGX report body (not yet verified)."""
    return Claims(
        evidence_type="sgx",
        measurement=body[64:96],
        signer=body[128:160],
        product_id=int.from_bytes(body[256:258], "little"),
        svn=int.from_bytes(body[258:260], "little"),
        debug=bool(body[48] & 0x02),
        report_data=body[320:384],
        components={
            "mrenclave": body[64:96],
            "mrsigner": body[128:160],
            "cpusvn": body[0:16],
            "miscselect": body[16:20],
            "attributes": body[48:64],
            "config_id": body[192:256],
        },
    )


def verify_sgx(
    data: bytes,
    *,
    policy: Policy,
    at: datetime | None = None,
    expected_report_data: bytes | None = None,
    roots: Sequence[bytes] | None = None,
    collateral: bytes | None = None,
) -> Claims:
    """Verify an SGX DCAP quote at time `at` (default now) and apply `policy`; return Claims."""
    from privinfer.tee.evidence.detect import finish

    at = as_utc(at)
    q = dcap.parse_quote(data)
    if q.body_type != 1:
        raise EvidenceRejected(Stage.PARSE, Reason.UNSUPPORTED, "not an SGX enclave quote")
    anchors = anchors_from(roots, INTEL_SGX_ROOT_SHA256)
    checked, path = dcap.verify_quote(q, anchors, at)
    claims = claims_from_body(q.body)
    claims.extra.update(
        {
            "quote_version": q.version,
            "qe_svn": q.qe_svn,
            "pce_svn": q.pce_svn,
            "padding_bytes": q.padding_len,
        }
    )
    claims.checked.extend(checked)
    claims.not_checked.extend(dcap.NOT_CHECKED)
    if collateral is not None:
        apply_collateral(claims, collateral, q, path, anchors, at)
    return finish(claims, policy, expected_report_data, at)
