"""SGX DCAP quote v3 verifier (chain, signature, binding, policy); trusts the pinned Intel root.

Security assumption: the Intel SGX Root CA (pinned) vouches for the PCK key, which vouches for
Intel's quoting enclave, which vouches for the attestation key that signed this quote. Platform
TCB status and revocation are appraised only when Intel collateral is given (`apply_collateral`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from privinfer.tee.claims import Claims, EvidenceRejected, Reason, Stage
from privinfer.tee.evidence import dcap
from privinfer.tee.evidence.x509chain import (
    INTEL_SGX_ROOT_SHA256,
    Anchor,
    anchors_from,
    as_utc,
    load_certificates,
    verify_chain,
)
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
    checked, path = dcap.verify_quote(q, anchors_from(roots, INTEL_SGX_ROOT_SHA256), at)
    claims = claims_from_body(q.body)
    claims.extra.update({"quote_version": q.version, "qe_svn": q.qe_svn, "pce_svn": q.pce_svn})
    claims.checked.extend(checked)
    claims.not_checked.extend(dcap.NOT_CHECKED)
    if collateral is not None:
        apply_collateral(
            claims, collateral, q, path, anchors_from(roots, INTEL_SGX_ROOT_SHA256), at
        )
    return finish(claims, policy, expected_report_data, at)


# --- DCAP collateral (TCB info, QE identity, CRLs) -------------------------------------------

_SGX_EXT = "1.2.840.113741.1.13.1"


def _tlvs(buf: bytes) -> Iterator[tuple[int, bytes]]:
    """Walk a run of DER TLVs: yield (tag, content)."""
    pos = 0
    while pos < len(buf):
        if pos + 2 > len(buf):
            raise EvidenceRejected(Stage.CHAIN, Reason.MALFORMED, "PCK SGX extension is cut short")
        tag, n, pos = buf[pos], buf[pos + 1], pos + 2
        if n & 0x80:
            k = n & 0x7F
            n, pos = int.from_bytes(buf[pos : pos + k], "big"), pos + k
        if pos + n > len(buf):
            raise EvidenceRejected(Stage.CHAIN, Reason.MALFORMED, "PCK SGX extension is cut short")
        yield tag, buf[pos : pos + n]
        pos += n


def _oid(content: bytes) -> str:
    """Dotted form of a DER OBJECT IDENTIFIER's content."""
    parts, acc = [], 0
    for b in content:
        acc = (acc << 7) | (b & 0x7F)
        if not b & 0x80:
            parts.append(acc)
            acc = 0
    first = min(parts[0] // 40, 2)
    return ".".join(str(x) for x in [first, parts[0] - 40 * first, *parts[1:]])


def _sgx_fields(seq: bytes, out: dict[str, bytes]) -> None:
    """Flatten the PCK certificate's SGX extension into {dotted OID: DER content}."""
    for _, pair in _tlvs(seq):
        items = list(_tlvs(pair))
        if len(items) != 2 or items[0][0] != 0x06:
            raise EvidenceRejected(
                Stage.CHAIN, Reason.MALFORMED, "PCK SGX extension entry is malformed"
            )
        name = _oid(items[0][1])
        out[name] = items[1][1]
        if items[1][0] == 0x30:
            _sgx_fields(items[1][1], out)


def pck_tcb(pck: x509.Certificate) -> dict[str, bytes]:
    """FMSPC, PCE-ID and TCB components from the PCK leaf's SGX extension."""
    try:
        ext = pck.extensions.get_extension_for_oid(x509.ObjectIdentifier(_SGX_EXT)).value
    except x509.ExtensionNotFound as exc:
        raise EvidenceRejected(
            Stage.CHAIN, Reason.MALFORMED, "PCK certificate lacks the SGX extension"
        ) from exc
    fields: dict[str, bytes] = {}
    outer = list(_tlvs(ext.value))  # type: ignore[attr-defined]
    if len(outer) != 1 or outer[0][0] != 0x30:
        raise EvidenceRejected(Stage.CHAIN, Reason.MALFORMED, "PCK SGX extension is not a sequence")
    _sgx_fields(outer[0][1], fields)
    return fields


def _signed_json(
    coll: dict, body_key: str, sig_key: str, chain_key: str, anchors: Sequence[Anchor], at: datetime
) -> dict:
    """Verify one signed collateral item (chain to the pinned root, ECDSA P-256, dates)."""
    try:
        body, sig = coll[body_key], bytes.fromhex(coll[sig_key])
        chain = load_certificates(coll[chain_key].encode())
    except (KeyError, ValueError, AttributeError) as exc:
        raise EvidenceRejected(
            Stage.CHAIN, Reason.MALFORMED, f"collateral lacks a valid {body_key}"
        ) from exc
    path = verify_chain(chain, anchors, at, body_key)
    cn = path[0].subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    key = path[0].public_key()
    if (
        not cn
        or cn[0].value != "Intel SGX TCB Signing"
        or not isinstance(key, ec.EllipticCurvePublicKey)
    ):
        raise EvidenceRejected(
            Stage.CHAIN, Reason.BAD_CHAIN, f"{body_key} not signed by Intel SGX TCB Signing"
        )
    if not dcap.ecdsa_verify(key, sig, body.encode(), hashes.SHA256()):
        raise EvidenceRejected(
            Stage.SIGNATURE, Reason.BAD_SIGNATURE, f"{body_key} signature does not verify"
        )
    data = json.loads(body)
    issued = datetime.fromisoformat(data["issueDate"].replace("Z", "+00:00"))
    nxt = datetime.fromisoformat(data["nextUpdate"].replace("Z", "+00:00"))
    if at < issued:
        raise EvidenceRejected(
            Stage.CHAIN, Reason.NOT_YET_VALID, f"{body_key} issued after the check time"
        )
    if at > nxt:
        raise EvidenceRejected(Stage.CHAIN, Reason.EXPIRED, f"{body_key} past its nextUpdate")
    return data


def _check_crl(
    der_hex: str, issuer: x509.Certificate, serial: int, at: datetime, what: str
) -> None:
    crl = x509.load_der_x509_crl(bytes.fromhex(der_hex))
    if crl.issuer != issuer.subject or not crl.is_signature_valid(issuer.public_key()):  # type: ignore[arg-type]
        raise EvidenceRejected(
            Stage.CHAIN, Reason.BAD_CHAIN, f"{what} CRL not signed by its issuer"
        )
    if crl.next_update_utc is not None and at > crl.next_update_utc:
        raise EvidenceRejected(Stage.CHAIN, Reason.EXPIRED, f"{what} CRL past its nextUpdate")
    if crl.get_revoked_certificate_by_serial_number(serial) is not None:
        raise EvidenceRejected(Stage.CHAIN, Reason.REVOKED, f"{what} certificate is revoked")


def apply_collateral(
    claims: Claims,
    raw: bytes,
    q: dcap.DcapQuote,
    path: list,
    anchors: Sequence[Anchor],
    at: datetime,
) -> None:
    """Verify Intel collateral and appraise TCB status, QE identity and PCK revocation."""
    try:
        _apply_collateral(claims, raw, q, path, anchors, at)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        raise EvidenceRejected(
            Stage.CHAIN, Reason.MALFORMED, "collateral JSON lacks a field or has a bad value"
        ) from exc


def _apply_collateral(
    claims: Claims,
    raw: bytes,
    q: dcap.DcapQuote,
    path: list,
    anchors: Sequence[Anchor],
    at: datetime,
) -> None:
    try:
        coll = json.loads(raw)
        root_crl, pck_crl = coll["root_ca_crl"], coll["pck_crl"]
    except (ValueError, KeyError, TypeError) as exc:
        raise EvidenceRejected(
            Stage.CHAIN, Reason.MALFORMED, "collateral is not DCAP collateral JSON"
        ) from exc
    tcb = _signed_json(coll, "tcb_info", "tcb_info_signature", "tcb_info_issuer_chain", anchors, at)
    qe = _signed_json(
        coll, "qe_identity", "qe_identity_signature", "qe_identity_issuer_chain", anchors, at
    )
    try:
        _check_crl(root_crl, path[-1], path[1].serial_number, at, "PCK CA")
        _check_crl(pck_crl, path[1], path[0].serial_number, at, "PCK")
    except ValueError as exc:
        raise EvidenceRejected(
            Stage.CHAIN, Reason.MALFORMED, "collateral CRL does not parse"
        ) from exc
    f = pck_tcb(path[0])
    base = _SGX_EXT
    if tcb.get("id") != "SGX" or bytes.fromhex(tcb["fmspc"]) != f.get(base + ".4"):
        raise EvidenceRejected(
            Stage.CHAIN, Reason.BAD_CHAIN, "TCB info is not for this platform's FMSPC"
        )
    if bytes.fromhex(tcb["pceId"]) != f.get(base + ".3"):
        raise EvidenceRejected(
            Stage.CHAIN, Reason.BAD_CHAIN, "TCB info is not for this platform's PCE"
        )
    if any(f"{base}.2.{i}" not in f for i in range(1, 18)):
        raise EvidenceRejected(
            Stage.CHAIN, Reason.MALFORMED, "PCK SGX extension lacks TCB components"
        )
    comps = [int.from_bytes(f[f"{base}.2.{i}"], "big") for i in range(1, 18)]
    status = "no matching TCB level"
    for level in tcb["tcbLevels"]:
        want = [c["svn"] for c in level["tcb"]["sgxtcbcomponents"]] + [level["tcb"]["pcesvn"]]
        if all(have >= w for have, w in zip(comps, want, strict=True)):
            status = level["tcbStatus"]
            break
    rep = q.qe_report
    if bytes.fromhex(qe["mrsigner"]) != rep[128:160] or qe["isvprodid"] != int.from_bytes(
        rep[256:258], "little"
    ):
        raise EvidenceRejected(
            Stage.CHAIN, Reason.BAD_CHAIN, "QE report does not match Intel's QE identity"
        )
    qe_svn = int.from_bytes(rep[258:260], "little")
    qe_status = next(
        (lv["tcbStatus"] for lv in qe["tcbLevels"] if qe_svn >= lv["tcb"]["isvsvn"]),
        "no matching level",
    )
    if "Revoked" in (status, qe_status):
        raise EvidenceRejected(
            Stage.POLICY, Reason.REVOKED, "Intel lists this platform or QE TCB as revoked"
        )
    claims.extra.update({"tcb_status": status, "qe_tcb_status": qe_status, "fmspc": tcb["fmspc"]})
    claims.checked += [
        "Intel TCB info and QE identity: signed by Intel SGX TCB Signing (chain to the pinned root), within issueDate..nextUpdate",
        "PCK CA and PCK leaf not revoked (Intel root CA CRL and PCK CRL, signatures checked)",
        f"platform TCB status per Intel: {status}; QE TCB status: {qe_status} (reported in extra; only Revoked is rejected)",
    ]
    for item in list(claims.not_checked):
        if item.startswith(("TCB status", "revocation of the PCK", "QE identity TCB")):
            claims.not_checked.remove(item)
