"""Tests for the software TEE platform: key hierarchy, files, quoting, key derivation, counters."""

from __future__ import annotations

import os
import stat
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from privinfer.tee import platform as pf
from privinfer.tee.evidence.software import SIGNED_LEN, parse_quote
from privinfer.tee.measurement import (
    EnclaveIdentity,
    combine_measurement,
    sign_identity,
    signer_id,
)
from privinfer.tee.platform import KeyPolicy, Platform, PlatformError, init_platform

SIGNER_KEY = ec.generate_private_key(ec.SECP384R1())


def ident(
    tag: bytes = b"a", signer: bytes | None = None, svn: int = 2, debug: bool = False
) -> EnclaveIdentity:
    code, cfg, model = (tag * 48)[:48], b"c" * 48, b"m" * 48
    s = signer_id(SIGNER_KEY.public_key()) if signer is None else (signer * 48)[:48]
    return EnclaveIdentity(
        combine_measurement(code, cfg, model), s, 1, svn, debug, code, cfg, model
    )


def signer_key(plat: Platform, identity: EnclaveIdentity, *, svn: int, label: bytes) -> bytes:
    """A SIGNER key with the signer's proof for `identity` (signed by SIGNER_KEY)."""
    return plat.derive_sealing_key(
        identity,
        key_policy=KeyPolicy.SIGNER,
        svn=svn,
        label=label,
        signer_proof=sign_identity(SIGNER_KEY, identity),
    )


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_init_creates_private_files(tmp_path: Path) -> None:
    d = tmp_path / "plat"
    export = tmp_path / "root.pem"
    plat = init_platform(d, export_root_to=export)
    assert mode(d) == 0o700 and mode(d / "ca") == 0o700
    for rel in (pf.ROOT_KEY, pf.AK_KEY, pf.AK_CERT, pf.SEALING_SECRET, pf.COUNTERS, pf.ROOT_CERT):
        assert mode(d / rel) == 0o600, rel
    assert len((d / pf.SEALING_SECRET).read_bytes()) == 32
    assert export.read_bytes() == plat.root_cert_pem() and mode(export) == 0o644


def test_key_hierarchy(tmp_path: Path) -> None:
    plat = init_platform(tmp_path / "p")
    root, ak = plat.root_cert, plat.ak_cert
    assert isinstance(root.public_key(), ec.EllipticCurvePublicKey)
    assert root.public_key().curve.name == "secp384r1"
    root.verify_directly_issued_by(root)
    ak.verify_directly_issued_by(root)
    assert root.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not ak.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert ak.not_valid_after_utc - ak.not_valid_before_utc == timedelta(days=365)


def test_init_refuses_existing_directory(tmp_path: Path) -> None:
    init_platform(tmp_path / "p")
    with pytest.raises(FileExistsError):
        init_platform(tmp_path / "p")


def test_load_refuses_readable_secret(tmp_path: Path) -> None:
    init_platform(tmp_path / "p")
    Platform(tmp_path / "p")
    os.chmod(tmp_path / "p" / pf.SEALING_SECRET, 0o644)
    with pytest.raises(PlatformError):
        Platform(tmp_path / "p")


def test_load_missing_platform(tmp_path: Path) -> None:
    with pytest.raises(PlatformError):
        Platform(tmp_path / "nothing")


def test_quote_layout_and_signature(tmp_path: Path) -> None:
    plat = init_platform(tmp_path / "p")
    now = datetime(2030, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    rd = bytes(range(64))
    q = plat.quote(ident(), rd, now=now)
    assert q[:4] == b"PIQT" and q[4:6] == b"\0\1" and q[6:8] == b"\0\1"
    assert q[8:256] == ident().to_bytes() and q[256:320] == rd
    parsed = parse_quote(q)
    assert parsed.issued_at == now and parsed.identity == ident()
    assert [c for c in parsed.certs] == [plat.ak_cert, plat.root_cert]
    r, s = int.from_bytes(q[328:376], "big"), int.from_bytes(q[376:424], "big")
    plat.ak_cert.public_key().verify(
        encode_dss_signature(r, s), q[:SIGNED_LEN], ec.ECDSA(hashes.SHA384())
    )


def test_quote_requires_64_byte_report_data(tmp_path: Path) -> None:
    plat = init_platform(tmp_path / "p")
    for bad in (b"", b"x" * 63, b"x" * 65):
        with pytest.raises(ValueError):
            plat.quote(ident(), bad)


def test_sealing_key_derivation(tmp_path: Path) -> None:
    plat = init_platform(tmp_path / "p")
    k = signer_key(plat, ident(), svn=2, label=b"model")
    assert len(k) == 32
    assert k == signer_key(Platform(tmp_path / "p"), ident(), svn=2, label=b"model")
    rogue = ec.generate_private_key(ec.SECP384R1())
    other_signer = ident(signer=b"T")
    variants = {
        signer_key(plat, ident(), svn=2, label=b"kv"),
        signer_key(plat, ident(), svn=1, label=b"model"),
        plat.derive_sealing_key(ident(), key_policy=KeyPolicy.MEASUREMENT, svn=2, label=b"model"),
        signer_key(plat, ident(debug=True), svn=2, label=b"model"),
        init_platform(tmp_path / "q").derive_sealing_key(
            ident(), key_policy=KeyPolicy.SIGNER, svn=2, label=b"model",
            signer_proof=sign_identity(SIGNER_KEY, ident()),
        ),
    }  # fmt: skip
    assert k not in variants and len(variants) == 5
    # Signer policy: another measurement of the same signer derives the same key, with its proof.
    assert k == signer_key(plat, ident(b"z"), svn=2, label=b"model")
    assert k != plat.derive_sealing_key(
        ident(b"z"), key_policy=KeyPolicy.MEASUREMENT, svn=2, label=b"model"
    )
    # ... and never from the signer id alone, nor with a proof by another key.
    with pytest.raises(PlatformError, match="signer's signature"):
        plat.derive_sealing_key(ident(b"z"), key_policy=KeyPolicy.SIGNER, svn=2, label=b"model")
    forged = sign_identity(rogue, replace(ident(b"z"), signer=signer_id(rogue.public_key())))
    with pytest.raises(PlatformError, match="signer's signature"):
        plat.derive_sealing_key(
            ident(b"z"), key_policy=KeyPolicy.SIGNER, svn=2, label=b"model", signer_proof=forged
        )
    assert other_signer.signer != ident().signer


def test_sealing_key_refuses_higher_svn(tmp_path: Path) -> None:
    plat = init_platform(tmp_path / "p")
    signer_key(plat, ident(svn=2), svn=0, label=b"x")
    with pytest.raises(PlatformError):
        signer_key(plat, ident(svn=2), svn=3, label=b"x")


def test_platform_refuses_files_of_another_owner(tmp_path: Path) -> None:
    plat = init_platform(tmp_path / "p")
    assert Platform(tmp_path / "p", owner=os.geteuid()).root_cert == plat.root_cert
    with pytest.raises(PlatformError, match="another user"):
        Platform(tmp_path / "p", owner=os.geteuid() + 12345)


def test_counters_increase_and_persist(tmp_path: Path) -> None:
    plat = init_platform(tmp_path / "p")
    assert plat.counter_read("a") == 0
    assert [plat.counter_increment("a") for _ in range(3)] == [1, 2, 3]
    assert plat.counter_increment("b") == 1
    again = Platform(tmp_path / "p")
    assert again.counter_read("a") == 3 and again.counter_read("b") == 1
    assert mode(tmp_path / "p" / pf.COUNTERS) == 0o600
    assert not [p for p in (tmp_path / "p").iterdir() if p.name.endswith(".tmp")]


def test_counter_names_validated(tmp_path: Path) -> None:
    plat = init_platform(tmp_path / "p")
    for bad in ("", "a/b", "x" * 129, "../c"):
        with pytest.raises(ValueError):
            plat.counter_increment(bad)


def test_corrupt_counter_store_refused(tmp_path: Path) -> None:
    plat = init_platform(tmp_path / "p")
    (tmp_path / "p" / pf.COUNTERS).write_text('{"a": -1}')
    with pytest.raises(PlatformError):
        plat.counter_read("a")
