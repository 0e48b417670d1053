"""Tests for sealing: identity/SVN/purpose binding, rollback detection, chunk integrity."""

from __future__ import annotations

import os
import stat
import struct
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from privinfer.tee.measurement import EnclaveIdentity, combine_measurement, sign_identity, signer_id
from privinfer.tee.platform import KeyPolicy, Platform, init_platform
from privinfer.tee.sealing import (
    SealingError,
    seal_bytes,
    seal_file,
    unseal_bytes,
    unseal_file,
    unseal_file_to_memory,
)

CANARY = b"CANARY-weights-91c2"
DATA = CANARY + bytes(range(256)) * 20  # 5139 bytes
CHUNK = 1000
MEAS, SIGN = KeyPolicy.MEASUREMENT, KeyPolicy.SIGNER
SIGNER_KEY = ec.generate_private_key(ec.SECP384R1())
SIGNER = signer_id(SIGNER_KEY.public_key())


def ident(
    code: bytes = b"c", svn: int = 2, signer: bytes | None = None, debug: bool = False
) -> EnclaveIdentity:
    c, f, m = code * 48, b"f" * 48, b"m" * 48
    s = SIGNER if signer is None else signer * 48
    return EnclaveIdentity(combine_measurement(c, f, m), s, 1, svn, debug, c, f, m)


@pytest.fixture
def plat(tmp_path: Path) -> Platform:
    return init_platform(tmp_path / "p")


def seal(
    plat: Platform, identity: EnclaveIdentity | None = None, policy=MEAS, purpose="model", data=DATA
) -> bytes:
    identity = identity or ident()
    proof = sign_identity(SIGNER_KEY, identity) if policy is SIGN else None
    return seal_bytes(
        plat,
        identity,
        data,
        purpose=purpose,
        key_policy=policy,
        chunk_size=CHUNK,
        signer_proof=proof,
    )


def header_len(blob: bytes) -> int:
    (plen,) = struct.unpack_from(">I", blob, 48)
    return 52 + plen


def chunks(blob: bytes) -> list[tuple[int, int]]:
    """(start, end) of each chunk record."""
    out, off = [], header_len(blob)
    while off < len(blob):
        _, n = struct.unpack_from(">BI", blob, off)
        out.append((off, off + 5 + n))
        off += 5 + n
    return out


@pytest.mark.parametrize("policy", [MEAS, SIGN])
def test_round_trip(plat: Platform, policy: KeyPolicy) -> None:
    blob = seal(plat, policy=policy)
    assert CANARY not in blob
    assert len(chunks(blob)) == 6
    proof = sign_identity(SIGNER_KEY, ident()) if policy is SIGN else None
    assert unseal_bytes(plat, ident(), blob, purpose="model", signer_proof=proof) == DATA


@pytest.mark.parametrize("data", [b"", b"x" * CHUNK, b"x" * (2 * CHUNK), b"y"])
def test_round_trip_edge_sizes(plat: Platform, data: bytes) -> None:
    blob = seal(plat, data=data)
    assert unseal_bytes(plat, ident(), blob, purpose="model") == data


def test_file_round_trip(plat: Platform, tmp_path: Path) -> None:
    src, sealed, out = tmp_path / "w.bin", tmp_path / "w.sealed", tmp_path / "w.out"
    src.write_bytes(DATA * 3)
    counter = seal_file(plat, ident(), src, sealed, purpose="model", chunk_size=CHUNK)
    assert counter == 1 and CANARY not in sealed.read_bytes()
    assert unseal_file_to_memory(plat, ident(), sealed, purpose="model") == DATA * 3
    unseal_file(plat, ident(), sealed, out, purpose="model")
    assert out.read_bytes() == DATA * 3 and stat.S_IMODE(out.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p", "w.bin", "w.out", "w.sealed"]


def test_other_measurement_cannot_open(plat: Platform) -> None:
    blob = seal(plat, policy=MEAS)
    with pytest.raises(SealingError):
        unseal_bytes(plat, ident(code=b"d"), blob, purpose="model")


def test_default_policy_is_measurement_so_another_measurement_cannot_open(plat: Platform) -> None:
    """Finding 5: a blob sealed by default under one measurement never opens under another, even
    one that claims the same signer id."""
    blob = seal_bytes(plat, ident(), DATA, purpose="model")
    assert blob[6] == MEAS
    with pytest.raises(SealingError):
        unseal_bytes(plat, ident(code=b"d"), blob, purpose="model")


def test_signer_policy_opens_for_other_measurement_only_with_signers_proof(plat: Platform) -> None:
    blob = seal(plat, policy=SIGN)
    other = ident(code=b"d")
    proof = sign_identity(SIGNER_KEY, other)
    assert unseal_bytes(plat, other, blob, purpose="model", signer_proof=proof) == DATA
    # Finding 5: claiming the signer id is not enough; nor is a proof for another identity or a
    # proof by another key.
    with pytest.raises(SealingError, match="signer's signature"):
        unseal_bytes(plat, other, blob, purpose="model")
    with pytest.raises(SealingError, match="signer's signature"):
        unseal_bytes(
            plat, other, blob, purpose="model", signer_proof=sign_identity(SIGNER_KEY, ident())
        )
    rogue = ec.generate_private_key(ec.SECP384R1())
    forged = sign_identity(rogue, replace(other, signer=signer_id(rogue.public_key())))
    with pytest.raises(SealingError, match="signer's signature"):
        unseal_bytes(plat, other, blob, purpose="model", signer_proof=forged)


def test_signer_policy_cannot_seal_without_proof(plat: Platform) -> None:
    with pytest.raises(SealingError, match="signer's signature"):
        seal_bytes(plat, ident(), DATA, purpose="model", key_policy=SIGN)


def test_other_signer_cannot_open(plat: Platform) -> None:
    blob = seal(plat, policy=SIGN)
    with pytest.raises(SealingError):
        unseal_bytes(plat, ident(signer=b"t"), blob, purpose="model")


def test_lower_svn_cannot_open_higher(plat: Platform) -> None:
    blob = seal(plat, ident(svn=3))
    with pytest.raises(SealingError):
        unseal_bytes(plat, ident(svn=2), blob, purpose="model")


def test_lower_svn_cannot_open_by_editing_header_svn(plat: Platform) -> None:
    blob = bytearray(seal(plat, ident(svn=3)))
    blob[10:12] = struct.pack(">H", 2)  # svn field
    with pytest.raises(SealingError):
        unseal_bytes(plat, ident(svn=2), bytes(blob), purpose="model")


def test_higher_svn_can_open_lower(plat: Platform) -> None:
    blob = seal(plat, ident(svn=1))
    assert unseal_bytes(plat, ident(svn=5), blob, purpose="model") == DATA


def test_debug_enclave_cannot_open_production_blob(plat: Platform) -> None:
    blob = seal(plat, policy=MEAS)
    with pytest.raises(SealingError):
        unseal_bytes(plat, ident(debug=True), blob, purpose="model")


def test_other_platform_cannot_open(plat: Platform, tmp_path: Path) -> None:
    blob = seal(plat)
    with pytest.raises(SealingError):
        unseal_bytes(init_platform(tmp_path / "q"), ident(), blob, purpose="model")


def test_purpose_mismatch(plat: Platform) -> None:
    blob = seal(plat, purpose="model")
    with pytest.raises(SealingError):
        unseal_bytes(plat, ident(), blob, purpose="kvcache")


def test_purpose_edited_in_header(plat: Platform) -> None:
    seal(plat, purpose="modex")  # so the counter check passes for the edited purpose
    blob = seal(plat, purpose="model")
    forged = blob.replace(b"model", b"modex", 1)
    with pytest.raises(SealingError):
        unseal_bytes(plat, ident(), forged, purpose="modex")


def test_rollback_detected(plat: Platform) -> None:
    old = seal(plat, data=b"version 1")
    new = seal(plat, data=b"version 2")
    assert unseal_bytes(plat, ident(), new, purpose="model") == b"version 2"
    with pytest.raises(SealingError, match="rollback"):
        unseal_bytes(plat, ident(), old, purpose="model")


def test_counter_is_per_purpose(plat: Platform) -> None:
    a = seal(plat, purpose="model")
    seal(plat, purpose="other")
    assert unseal_bytes(plat, ident(), a, purpose="model") == DATA


def test_tampered_chunk(plat: Platform) -> None:
    blob = bytearray(seal(plat))
    start, end = chunks(bytes(blob))[2]
    blob[start + 100] ^= 0x01
    with pytest.raises(SealingError) as e:
        unseal_bytes(plat, ident(), bytes(blob), purpose="model")
    assert CANARY.decode() not in str(e.value)


def test_tampered_header(plat: Platform) -> None:
    blob = bytearray(seal(plat))
    blob[40] ^= 0x01  # blob_id
    with pytest.raises(SealingError):
        unseal_bytes(plat, ident(), bytes(blob), purpose="model")


def test_truncated_missing_final_chunk(plat: Platform) -> None:
    blob = seal(plat)
    last_start, _ = chunks(blob)[-1]
    with pytest.raises(SealingError):
        unseal_bytes(plat, ident(), blob[:last_start], purpose="model")


def test_final_flag_forged_on_earlier_chunk(plat: Platform) -> None:
    blob = seal(plat, data=b"z" * (2 * CHUNK))
    (s0, e0), _ = chunks(blob)
    forged = bytearray(blob[:e0])
    forged[s0] = 1  # claim chunk 0 is final
    with pytest.raises(SealingError):
        unseal_bytes(plat, ident(), bytes(forged), purpose="model")


@pytest.mark.parametrize("cut", [1, 17, 60])
def test_truncated_mid_blob(plat: Platform, cut: int) -> None:
    blob = seal(plat)
    with pytest.raises(SealingError):
        unseal_bytes(plat, ident(), blob[:-cut], purpose="model")


def test_reordered_chunks(plat: Platform) -> None:
    blob = seal(plat)
    c = chunks(blob)
    (a0, a1), (b0, b1) = c[0], c[1]
    swapped = blob[:a0] + blob[b0:b1] + blob[a0:a1] + blob[b1:]
    with pytest.raises(SealingError):
        unseal_bytes(plat, ident(), swapped, purpose="model")


def test_trailing_bytes(plat: Platform) -> None:
    with pytest.raises(SealingError):
        unseal_bytes(plat, ident(), seal(plat) + b"\0", purpose="model")


def test_failed_unseal_file_leaves_no_output(plat: Platform, tmp_path: Path) -> None:
    sealed, out = tmp_path / "b", tmp_path / "out"
    blob = seal(plat)
    sealed.write_bytes(blob[: chunks(blob)[-1][0]])
    with pytest.raises(SealingError):
        unseal_file(plat, ident(), sealed, out, purpose="model")
    assert not out.exists() and not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
