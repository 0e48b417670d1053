"""Tests for the software-platform evidence verifier and the attestation binding."""

from __future__ import annotations

import struct
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from privinfer.tee.attestation import attest, new_nonce, report_data, verify_attestation
from privinfer.tee.channel import public_bytes
from privinfer.tee.claims import EvidenceRejected, Reason, Stage
from privinfer.tee.evidence.software import parse_quote, verify_software_quote
from privinfer.tee.measurement import EnclaveIdentity, combine_measurement
from privinfer.tee.platform import Platform, init_platform, make_ak_cert
from privinfer.tee.policy import Policy

NOW = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)
LATER = NOW + timedelta(seconds=2)
CTX = b"session-1"


def ident(svn: int = 3, debug: bool = False) -> EnclaveIdentity:
    code, cfg, model = b"c" * 48, b"f" * 48, b"m" * 48
    return EnclaveIdentity(
        combine_measurement(code, cfg, model), b"s" * 48, 1, svn, debug, code, cfg, model
    )


def allow(**kw) -> Policy:
    base = {
        "allowed_measurements": frozenset({ident().measurement}),
        "allowed_signers": frozenset({b"s" * 48}),
    }
    return Policy(**(base | kw))


@pytest.fixture
def env(tmp_path: Path):
    plat = init_platform(tmp_path / "p", now=NOW)
    pub = public_bytes(X25519PrivateKey.generate())
    nonce = new_nonce()
    quote = attest(plat, ident(), pub, nonce, CTX, now=NOW)
    return plat, pub, nonce, quote


def rejected(exc: pytest.ExceptionInfo[EvidenceRejected], stage: Stage, reason: Reason) -> None:
    assert (exc.value.stage, exc.value.reason) == (stage, reason), str(exc.value)


def verify(env, quote=None, *, nonce=None, pub=None, ctx=CTX, root=None, policy=None, now=LATER):
    plat, pub0, nonce0, quote0 = env
    return verify_attestation(
        quote0 if quote is None else quote,
        nonce0 if nonce is None else nonce,
        pub0 if pub is None else pub,
        ctx,
        plat.root_cert_pem() if root is None else root,
        allow() if policy is None else policy,
        now,
    )


def flip(data: bytes, index: int) -> bytes:
    b = bytearray(data)
    b[index] ^= 0x01
    return bytes(b)


def test_happy_path(env) -> None:
    claims = verify(env)
    assert claims.measurement == ident().measurement and claims.signer == b"s" * 48
    assert (claims.svn, claims.product_id, claims.debug) == (3, 1, False)
    assert claims.components == {"code": b"c" * 48, "config": b"f" * 48, "model": b"m" * 48}
    assert claims.issued_at == NOW and len(claims.report_data) == 64
    assert any(c.startswith("policy") for c in claims.checked) and claims.not_checked
    assert claims.to_json()["measurement"] == ident().measurement.hex()


def test_root_object_accepted(env) -> None:
    verify(env, root=env[0].root_cert)


def test_wrong_root(env, tmp_path: Path) -> None:
    other = init_platform(tmp_path / "other", now=NOW)
    with pytest.raises(EvidenceRejected) as e:
        verify(env, root=other.root_cert_pem())
    rejected(e, Stage.CHAIN, Reason.UNTRUSTED_ROOT)


def test_ak_not_certified_by_pinned_root(env) -> None:
    """A forger with their own AK appends the pinned root: the chain link fails."""
    plat, pub, nonce, _ = env
    rogue_root = ec.generate_private_key(ec.SECP384R1())
    rogue_ak = ec.generate_private_key(ec.SECP384R1())
    cert = make_ak_cert(rogue_root, plat.root_cert, rogue_ak.public_key(), NOW, timedelta(days=1))
    forged = Platform.__new__(Platform)
    forged._ak, forged.ak_cert, forged.root_cert = rogue_ak, cert, plat.root_cert
    q = forged.quote(ident(), report_data(pub, nonce, CTX), now=NOW)
    with pytest.raises(EvidenceRejected) as e:
        verify(env, q)
    rejected(e, Stage.CHAIN, Reason.BAD_CHAIN)


def test_expired_ak_cert(env) -> None:
    with pytest.raises(EvidenceRejected) as e:
        verify(env, now=NOW + timedelta(days=400))
    rejected(e, Stage.CHAIN, Reason.EXPIRED)


def test_not_yet_valid(env) -> None:
    with pytest.raises(EvidenceRejected) as e:
        verify(env, now=NOW - timedelta(days=1))
    rejected(e, Stage.CHAIN, Reason.NOT_YET_VALID)


def test_flipped_bit_in_identity_svn(env) -> None:
    with pytest.raises(EvidenceRejected) as e:
        verify(env, flip(env[3], 8 + 99))
    rejected(e, Stage.SIGNATURE, Reason.BAD_SIGNATURE)


def test_flipped_bit_in_identity_measurement(env) -> None:
    with pytest.raises(EvidenceRejected) as e:
        verify(env, flip(env[3], 8))
    rejected(e, Stage.PARSE, Reason.MALFORMED)


def test_flipped_bit_in_report_data(env) -> None:
    with pytest.raises(EvidenceRejected) as e:
        verify(env, flip(env[3], 256 + 10))
    rejected(e, Stage.SIGNATURE, Reason.BAD_SIGNATURE)


def test_flipped_bit_in_timestamp(env) -> None:
    with pytest.raises(EvidenceRejected) as e:
        verify(env, flip(env[3], 327))
    rejected(e, Stage.SIGNATURE, Reason.BAD_SIGNATURE)


def test_flipped_bit_in_signature(env) -> None:
    with pytest.raises(EvidenceRejected) as e:
        verify(env, flip(env[3], 328 + 50))
    rejected(e, Stage.SIGNATURE, Reason.BAD_SIGNATURE)


@pytest.mark.parametrize("cut", [0, 7, 300, 424, 427, -1])
def test_truncated_quote(env, cut: int) -> None:
    with pytest.raises(EvidenceRejected) as e:
        verify(env, env[3][:cut])
    rejected(e, Stage.PARSE, Reason.TRUNCATED)


def test_trailing_bytes(env) -> None:
    with pytest.raises(EvidenceRejected) as e:
        verify(env, env[3] + b"\0")
    rejected(e, Stage.PARSE, Reason.TRAILING_BYTES)


def test_bad_magic_and_version(env) -> None:
    with pytest.raises(EvidenceRejected) as e:
        verify(env, b"XIQT" + env[3][4:])
    rejected(e, Stage.PARSE, Reason.MALFORMED)
    with pytest.raises(EvidenceRejected) as e:
        verify(env, env[3][:4] + struct.pack(">H", 2) + env[3][6:])
    rejected(e, Stage.PARSE, Reason.UNSUPPORTED)


def test_nonce_mismatch(env) -> None:
    with pytest.raises(EvidenceRejected) as e:
        verify(env, nonce=new_nonce())
    rejected(e, Stage.BINDING, Reason.REPORT_DATA_MISMATCH)


def test_enclave_key_mismatch(env) -> None:
    with pytest.raises(EvidenceRejected) as e:
        verify(env, pub=public_bytes(X25519PrivateKey.generate()))
    rejected(e, Stage.BINDING, Reason.REPORT_DATA_MISMATCH)


def test_context_mismatch(env) -> None:
    with pytest.raises(EvidenceRejected) as e:
        verify(env, ctx=b"session-2")
    rejected(e, Stage.BINDING, Reason.REPORT_DATA_MISMATCH)


def test_debug_rejected_by_default_policy(env) -> None:
    plat, pub, nonce, _ = env
    q = attest(plat, ident(debug=True), pub, nonce, CTX, now=NOW)
    with pytest.raises(EvidenceRejected) as e:
        verify(env, q)
    rejected(e, Stage.POLICY, Reason.DEBUG_ENABLED)
    assert verify(env, q, policy=allow(allow_debug=True)).debug


def test_default_policy_denies(env) -> None:
    with pytest.raises(EvidenceRejected) as e:
        verify(env, policy=Policy())
    rejected(e, Stage.POLICY, Reason.MEASUREMENT_NOT_ALLOWED)


def test_measurement_not_in_allowlist(env) -> None:
    with pytest.raises(EvidenceRejected) as e:
        verify(env, policy=allow(allowed_measurements=frozenset({b"x" * 48})))
    rejected(e, Stage.POLICY, Reason.MEASUREMENT_NOT_ALLOWED)


def test_signer_not_in_allowlist(env) -> None:
    with pytest.raises(EvidenceRejected) as e:
        verify(env, policy=allow(allowed_signers=frozenset({b"x" * 48})))
    rejected(e, Stage.POLICY, Reason.SIGNER_NOT_ALLOWED)


def test_svn_too_low(env) -> None:
    with pytest.raises(EvidenceRejected) as e:
        verify(env, policy=allow(min_svn=4))
    rejected(e, Stage.POLICY, Reason.SVN_TOO_LOW)


def test_too_old(env) -> None:
    with pytest.raises(EvidenceRejected) as e:
        verify(env, now=NOW + timedelta(seconds=301))
    rejected(e, Stage.POLICY, Reason.TOO_OLD)


def test_report_data_construction() -> None:
    pub, nonce = b"k" * 32, b"n" * 32
    rd = report_data(pub, nonce, b"ctx")
    assert len(rd) == 64 and rd != report_data(pub, nonce, b"ctx2")
    # Length prefixes: moving a byte between fields changes the value.
    assert report_data(pub, nonce, b"") != report_data(pub, nonce, b"\0")
    with pytest.raises(ValueError):
        report_data(b"k" * 31, nonce, b"")
    with pytest.raises(ValueError):
        report_data(pub, b"n" * 16, b"")
    assert new_nonce() != new_nonce() and len(new_nonce()) == 32


def test_verifier_requires_full_report_data(env) -> None:
    with pytest.raises(ValueError):
        verify_software_quote(
            env[3], root_cert=env[0].root_cert, expected_report_data=b"", policy=allow()
        )


def test_parse_exposes_fields(env) -> None:
    q = parse_quote(env[3])
    assert q.identity == ident() and len(q.certs) == 2 and len(q.signature) == 96
