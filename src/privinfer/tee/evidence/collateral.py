"""Intel DCAP collateral for SGX and TDX quotes: signed TCB info and QE identity, CRLs, TCB levels.

Security assumption: collateral is trusted only through the relying party's pinned Intel root:
TCB info and QE identity must be signed by "Intel SGX TCB Signing" (chain to the pinned root,
not revoked by the root CA CRL) and be current at the check time; the CRLs must be signed by the
root and by the PCK CA of the quote's own chain. Certificates inside the collateral never become
trust anchors. This module finds the statuses (platform, QE, TDX module); whether a status is
acceptable is the policy's decision (`policy.check_policy`).

Layout: the JSON of Phala-Network/dcap-qvl's `QuoteCollateralV3` (keys `tcb_info`,
`tcb_info_signature`, `tcb_info_issuer_chain`, `qe_identity`, `qe_identity_signature`,
`qe_identity_issuer_chain`, `root_ca_crl`, `pck_crl` as hex DER).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from privinfer.tee.claims import Claims, EvidenceRejected, Reason, Stage
from privinfer.tee.evidence import dcap
from privinfer.tee.evidence.pck import SGX_EXT, pck_tcb
from privinfer.tee.evidence.x509chain import Anchor, load_certificates, verify_chain

UNMATCHED = "NoMatchingTcbLevel"  # our name for "the platform is below every listed level"
_RANK = [  # Intel's statuses from best to worst (merging keeps the worse)
    "UpToDate",
    "SWHardeningNeeded",
    "ConfigurationNeeded",
    "ConfigurationAndSWHardeningNeeded",
    "OutOfDate",
    "OutOfDateConfigurationNeeded",
    "Revoked",
    UNMATCHED,
]


def merge_status(a: str, b: str) -> str:
    """The worse of two TCB statuses (unknown names count as worst)."""
    rank = {s: i for i, s in enumerate(_RANK)}
    return max(a, b, key=lambda s: rank.get(s, len(_RANK)))


def _reject(reason: Reason, detail: str, stage: Stage = Stage.CHAIN) -> EvidenceRejected:
    return EvidenceRejected(stage, reason, detail)


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def check_crl(
    der_hex: str, issuer: x509.Certificate, serials: Sequence[int], at: datetime, what: str
) -> None:
    """The CRL is `issuer`'s, signed by it, current at `at`, and lists none of `serials`."""
    try:
        crl = x509.load_der_x509_crl(bytes.fromhex(der_hex))
    except ValueError as exc:
        raise _reject(Reason.MALFORMED, f"{what} CRL does not parse") from exc
    if crl.issuer != issuer.subject or not crl.is_signature_valid(issuer.public_key()):  # type: ignore[arg-type]
        raise _reject(Reason.BAD_CHAIN, f"{what} CRL not signed by its issuer")
    if at < crl.last_update_utc:
        raise _reject(Reason.NOT_YET_VALID, f"{what} CRL issued after the check time")
    if crl.next_update_utc is not None and at > crl.next_update_utc:
        raise _reject(Reason.EXPIRED, f"{what} CRL past its nextUpdate")
    for serial in serials:
        if crl.get_revoked_certificate_by_serial_number(serial) is not None:
            raise _reject(Reason.REVOKED, f"a certificate under the {what} CRL is revoked")


def _signed_json(
    coll: dict, key: str, anchors: Sequence[Anchor], at: datetime, root_crl: str
) -> tuple[dict, datetime]:
    """One signed collateral item: chain to the pinned root, not revoked, ECDSA P-256, dates."""
    try:
        body, sig = coll[key], bytes.fromhex(coll[key + "_signature"])
        chain = load_certificates(coll[key + "_issuer_chain"].encode())
    except (KeyError, ValueError, AttributeError) as exc:
        raise _reject(Reason.MALFORMED, f"collateral lacks a valid {key}") from exc
    path = verify_chain(chain, anchors, at, key)
    check_crl(root_crl, path[-1], [c.serial_number for c in path[:-1]], at, "Intel root CA")
    cn = path[0].subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    key_obj = path[0].public_key()
    if (
        not cn
        or cn[0].value != "Intel SGX TCB Signing"
        or not isinstance(key_obj, ec.EllipticCurvePublicKey)
    ):
        raise _reject(Reason.BAD_CHAIN, f"{key} not signed by Intel SGX TCB Signing")
    if not dcap.ecdsa_verify(key_obj, sig, body.encode(), hashes.SHA256()):
        raise _reject(Reason.BAD_SIGNATURE, f"{key} signature does not verify", Stage.SIGNATURE)
    data = json.loads(body)
    if at < _time(data["issueDate"]):
        raise _reject(Reason.NOT_YET_VALID, f"{key} issued after the check time")
    if at > _time(data["nextUpdate"]):
        raise _reject(Reason.EXPIRED, f"{key} past its nextUpdate")
    return data, _time(data["issueDate"])


def match_tcb_level(
    levels: Sequence[dict], cpu_svn: Sequence[int], pce_svn: int, tee_tcb_svn: bytes | None
) -> dict | None:
    """The first level (highest first) this platform meets, else None.

    A level is met when every SGX component SVN of the PCK certificate, its PCE SVN and (TDX)
    every byte of TEE_TCB_SVN is at least the level's value.
    """

    def order(lv: dict) -> tuple:  # highest first, as Intel publishes and dcap-qvl re-sorts
        t = lv["tcb"]
        tdx = [c["svn"] for c in t.get("tdxtcbcomponents", [])]
        return ([c["svn"] for c in t["sgxtcbcomponents"]], t["pcesvn"], tdx)

    for level in sorted(levels, key=order, reverse=True):
        tcb = level["tcb"]
        want = [c["svn"] for c in tcb["sgxtcbcomponents"]]
        if len(want) != len(cpu_svn):
            raise _reject(Reason.MALFORMED, "TCB level does not have 16 SGX components")
        if pce_svn < tcb["pcesvn"] or any(h < w for h, w in zip(cpu_svn, want, strict=True)):
            continue
        if tee_tcb_svn is not None:
            tdx = [c["svn"] for c in tcb["tdxtcbcomponents"]]
            if len(tdx) != len(tee_tcb_svn) or any(
                h < w for h, w in zip(tee_tcb_svn, tdx, strict=True)
            ):
                continue
        return level
    return None


def _tdx_module(tcb: dict, body: bytes) -> str | None:
    """TDX module identity (MRSIGNERSEAM, SEAM attributes) and its TCB status, if Intel lists one."""
    svn, version = body[0], body[1]
    ident = tcb["tdxModule"]
    levels = None
    if version > 0 and tcb.get("tdxModuleIdentities"):
        want = f"TDX_{version:02X}"
        found = [m for m in tcb["tdxModuleIdentities"] if m["id"].upper() == want]
        if not found:
            raise _reject(Reason.BAD_CHAIN, f"TCB info has no TDX module identity {want}")
        ident, levels = found[0], found[0]["tcbLevels"]
    mask = bytes.fromhex(ident["attributesMask"])
    attrs = bytes(a & m for a, m in zip(body[112:120], mask, strict=True))
    if bytes.fromhex(ident["mrsigner"]) != body[64:112] or attrs != bytes.fromhex(
        ident["attributes"]
    ):
        raise _reject(Reason.BAD_CHAIN, "TDX module is not the one Intel's TCB info names")
    if levels is None:
        return None
    return next((lv["tcbStatus"] for lv in levels if svn >= lv["tcb"]["isvsvn"]), UNMATCHED)


def _qe_status(qe: dict, q: dcap.DcapQuote, tdx: bool) -> str:
    if qe.get("id") != ("TD_QE" if tdx else "QE"):
        raise _reject(Reason.BAD_CHAIN, "QE identity is for another quoting enclave")
    rep = q.qe_report

    def masked(value: bytes, mask_hex: str) -> bytes:
        return bytes(a & m for a, m in zip(value, bytes.fromhex(mask_hex), strict=True))

    if (
        bytes.fromhex(qe["mrsigner"]) != rep[128:160]
        or qe["isvprodid"] != int.from_bytes(rep[256:258], "little")
        or int.from_bytes(rep[16:20], "little") & int(qe["miscselectMask"], 16)
        != int(qe["miscselect"], 16)
        or masked(rep[48:64], qe["attributesMask"]) != bytes.fromhex(qe["attributes"])
    ):
        raise _reject(Reason.BAD_CHAIN, "QE report does not match Intel's QE identity")
    svn = int.from_bytes(rep[258:260], "little")
    return next(
        (lv["tcbStatus"] for lv in qe["tcbLevels"] if svn >= lv["tcb"]["isvsvn"]), UNMATCHED
    )


def appraise(
    raw: bytes, q: dcap.DcapQuote, path: list, anchors: Sequence[Anchor], at: datetime
) -> dict:
    """Verify collateral for quote `q` (PCK `path`, leaf first) and return its TCB findings.

    Raises EvidenceRejected when the collateral is malformed, not Intel's, not current, for
    another platform or QE, or when a CRL lists a certificate of the quote's chain. Returns
    `tcb_status` (platform, merged with the TDX module's), `qe_tcb_status`, `tcb_date`,
    `tcb_eval_number`, `advisory_ids` and `fmspc`.
    """
    try:
        return _appraise(json.loads(raw), q, path, anchors, at)
    except EvidenceRejected:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        raise _reject(Reason.MALFORMED, "collateral JSON lacks a field or has a bad value") from exc


def _appraise(
    coll: dict, q: dcap.DcapQuote, path: list, anchors: Sequence[Anchor], at: datetime
) -> dict:
    tdx = q.tee_type == dcap.TEE_TDX
    if len(path) != 3:
        raise _reject(Reason.BAD_CHAIN, "PCK chain is not leaf -> PCK CA -> root")
    root_crl = coll["root_ca_crl"]
    tcb, _ = _signed_json(coll, "tcb_info", anchors, at, root_crl)
    qe, _ = _signed_json(coll, "qe_identity", anchors, at, root_crl)
    check_crl(root_crl, path[-1], [path[1].serial_number], at, "Intel root CA")
    check_crl(coll["pck_crl"], path[1], [path[0].serial_number], at, "PCK CA")
    f = pck_tcb(path[0])
    if tcb.get("id") != ("TDX" if tdx else "SGX") or tcb.get("version", 0) < (3 if tdx else 2):
        raise _reject(Reason.BAD_CHAIN, "TCB info is for another TEE type or too old a version")
    if bytes.fromhex(tcb["fmspc"]) != f.get(SGX_EXT + ".4") or bytes.fromhex(tcb["pceId"]) != f.get(
        SGX_EXT + ".3"
    ):
        raise _reject(Reason.BAD_CHAIN, "TCB info is not for this platform (FMSPC / PCE-ID)")
    if any(f"{SGX_EXT}.2.{i}" not in f for i in range(1, 18)):
        raise _reject(Reason.MALFORMED, "PCK SGX extension lacks TCB components")
    comps = [int.from_bytes(f[f"{SGX_EXT}.2.{i}"], "big") for i in range(1, 18)]
    level = match_tcb_level(tcb["tcbLevels"], comps[:16], comps[16], q.body[:16] if tdx else None)
    status = level["tcbStatus"] if level else UNMATCHED
    advisories = list(level.get("advisoryIDs", [])) if level else []
    if tdx and level is not None:
        module = _tdx_module(tcb, q.body)
        if module is not None:
            status = merge_status(status, module)
    qe_status = _qe_status(qe, q, tdx)
    return {
        "tcb_status": status,
        "qe_tcb_status": qe_status,
        "tcb_date": level["tcbDate"] if level else None,
        "tcb_eval_number": int(tcb["tcbEvaluationDataNumber"]),
        "advisory_ids": advisories,
        "fmspc": tcb["fmspc"],
    }


def collateral_for(quote: bytes, source: Path | str) -> bytes | None:
    """Collateral for this DCAP quote from `source` (file or cache directory), or None.

    The quote's (not yet verified) PCK certificate only picks the file; the verifier then checks
    that the collateral is Intel's and for this platform."""
    src = Path(source)
    if src.is_file():
        return src.read_bytes()
    q = dcap.parse_quote(quote)
    fmspc = pck_tcb(load_certificates(q.cert_data)[0]).get(SGX_EXT + ".4", b"").hex()
    return find_collateral(src, fmspc, "tdx" if q.tee_type == dcap.TEE_TDX else "sgx")


def find_collateral(source: Path | str, fmspc: str, tee: str) -> bytes | None:
    """Collateral for platform `fmspc` ("sgx" or "tdx") from a file or a cache directory.

    A file is returned as it is (the verifier checks it is for this platform). A directory is
    searched for `*.json` files whose TCB info names this FMSPC and TEE; the newest
    (highest tcbEvaluationDataNumber, then issueDate) wins. None when nothing matches.
    """
    src = Path(source)
    if src.is_file():
        return src.read_bytes()
    best: tuple[tuple[int, str], bytes] | None = None
    for p in sorted(src.glob("*.json")):
        try:
            raw = p.read_bytes()
            tcb = json.loads(json.loads(raw)["tcb_info"])
            key = (int(tcb["tcbEvaluationDataNumber"]), str(tcb["issueDate"]))
            same = tcb["fmspc"].lower() == fmspc.lower() and tcb["id"].lower() == tee
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if same and (best is None or key > best[0]):
            best = (key, raw)
    return best[1] if best else None


def apply_collateral(
    claims: Claims,
    raw: bytes,
    q: dcap.DcapQuote,
    path: list,
    anchors: Sequence[Anchor],
    at: datetime,
) -> None:
    """Appraise `raw` collateral for `q` and record the findings in `claims` (extra, checked)."""
    found = appraise(raw, q, path, anchors, at)
    claims.extra.update(found)
    claims.checked += [
        "Intel TCB info and QE identity: signed by Intel SGX TCB Signing (chain to the pinned "
        "root, not revoked), within issueDate..nextUpdate",
        "PCK CA and PCK leaf not revoked (Intel root CA CRL and PCK CRL, signatures and dates checked)",
        f"platform TCB status per Intel: {found['tcb_status']}; QE TCB status: "
        f"{found['qe_tcb_status']} (the policy decides which are acceptable)",
    ]
    claims.not_checked[:] = [s for s in claims.not_checked if not s.startswith(_NEEDS_COLLATERAL)]


_NEEDS_COLLATERAL = ("TCB status", "revocation of the PCK", "QE identity TCB", "MRSEAM")
