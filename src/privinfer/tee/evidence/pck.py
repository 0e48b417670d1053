"""The Intel SGX extension of a PCK certificate: FMSPC, PCE-ID and the platform's TCB components.

Security assumption: the certificate was already verified (chain to the pinned Intel root); this
module only reads the extension, strictly (a malformed extension is a named rejection).
"""

from __future__ import annotations

from collections.abc import Iterator

from cryptography import x509

from privinfer.tee.claims import EvidenceRejected, Reason, Stage

SGX_EXT = "1.2.840.113741.1.13.1"


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
        ext = pck.extensions.get_extension_for_oid(x509.ObjectIdentifier(SGX_EXT)).value
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
