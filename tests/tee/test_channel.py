"""Tests for the attested secure channel: key schedule and record protection."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from privinfer.tee.attestation import attest, new_nonce, verify_attestation
from privinfer.tee.channel import (
    ChannelError,
    RecordType,
    SecureChannel,
    client_channel,
    enclave_channel,
    public_bytes,
    transcript_hash,
)
from privinfer.tee.measurement import EnclaveIdentity, combine_measurement
from privinfer.tee.platform import init_platform
from privinfer.tee.policy import Policy

DATA, END = RecordType.DATA, RecordType.END
SID = b"\x01" * 16
CANARY = b"CANARY-prompt-7f3a"


def pair(
    sid_client: bytes = SID, sid_enclave: bytes = SID, quote: bytes = b"quote"
) -> tuple[SecureChannel, SecureChannel]:
    ekey = X25519PrivateKey.generate()
    nonce = new_nonce()
    cpub, client = client_channel(public_bytes(ekey), nonce, quote, sid_client)
    enclave = enclave_channel(ekey, cpub, nonce, quote, sid_enclave)
    return client, enclave


def test_full_flow_with_attestation(tmp_path: Path) -> None:
    plat = init_platform(tmp_path / "p")
    code, cfg, model = b"c" * 48, b"f" * 48, b"m" * 48
    ident = EnclaveIdentity(
        combine_measurement(code, cfg, model), b"s" * 48, 1, 1, False, code, cfg, model
    )
    ekey = X25519PrivateKey.generate()
    nonce = new_nonce()
    quote = attest(plat, ident, public_bytes(ekey), nonce, SID)
    policy = Policy(
        allowed_measurements=frozenset({ident.measurement}),
        allowed_signers=frozenset({ident.signer}),
    )
    verify_attestation(
        quote, nonce, public_bytes(ekey), SID, plat.root_cert_pem(), policy, datetime.now(UTC)
    )
    cpub, client = client_channel(public_bytes(ekey), nonce, quote, SID)
    enclave = enclave_channel(ekey, cpub, nonce, quote, SID)
    rec = client.seal(DATA, CANARY)
    assert CANARY not in rec
    assert enclave.open(rec) == (DATA, CANARY)
    assert client.open(enclave.seal(DATA, b"tok")) == (DATA, b"tok")


def test_both_directions_and_end() -> None:
    client, enclave = pair()
    for i in range(3):
        assert enclave.open(client.seal(DATA, b"p%d" % i)) == (DATA, b"p%d" % i)
    assert enclave.open(client.seal(END, b"")) == (END, b"")
    assert enclave.received_end
    enclave.require_end()
    for i in range(3):
        assert client.open(enclave.seal(DATA, b"t%d" % i)) == (DATA, b"t%d" % i)
    assert client.open(enclave.seal(END, b"")) == (END, b"")


def test_nonces_not_reused() -> None:
    client, _ = pair()
    a, b = client.seal(DATA, b"same"), client.seal(DATA, b"same")
    assert a[9:] != b[9:]


def test_replay() -> None:
    client, enclave = pair()
    rec = client.seal(DATA, b"x")
    enclave.open(rec)
    with pytest.raises(ChannelError):
        enclave.open(rec)
    with pytest.raises(ChannelError):  # session is over, even for a valid next record
        enclave.open(client.seal(DATA, b"y"))


def test_reorder() -> None:
    client, enclave = pair()
    r0, r1 = client.seal(DATA, b"0"), client.seal(DATA, b"1")
    with pytest.raises(ChannelError):
        enclave.open(r1)
    with pytest.raises(ChannelError):
        enclave.open(r0)


def test_reorder_with_rewritten_sequence_number() -> None:
    client, enclave = pair()
    client.seal(DATA, b"0")
    r1 = client.seal(DATA, b"1")
    with pytest.raises(ChannelError):
        enclave.open(r1[:1] + (0).to_bytes(8, "big") + r1[9:])


def test_reflection() -> None:
    client, enclave = pair()
    rec = client.seal(DATA, b"to enclave")
    with pytest.raises(ChannelError):
        client.open(rec)
    rec2 = enclave.seal(DATA, b"to client")
    with pytest.raises(ChannelError):
        enclave.open(rec2)


@pytest.mark.parametrize("cut", [1, 5, 9, 24])
def test_truncated_record(cut: int) -> None:
    client, enclave = pair()
    rec = client.seal(DATA, b"hello world")
    with pytest.raises(ChannelError):
        enclave.open(rec[:-cut])


def test_truncated_stream_without_end() -> None:
    client, enclave = pair()
    enclave.open(client.seal(DATA, b"x"))
    with pytest.raises(ChannelError):
        enclave.require_end()
    assert enclave.broken


@pytest.mark.parametrize("index", [0, 8, 9, -1])
def test_tampered_record(index: int) -> None:
    client, enclave = pair()
    rec = bytearray(client.seal(DATA, b"hello"))
    rec[index] ^= 0x01 if index else 0x03  # type byte 1 -> 2 (END)
    with pytest.raises(ChannelError):
        enclave.open(bytes(rec))


def test_data_after_end_rejected_by_receiver() -> None:
    client, enclave = pair()
    enclave.open(client.seal(END, b""))
    client.sent_end = False  # simulate a misbehaving sender
    with pytest.raises(ChannelError):
        enclave.open(client.seal(DATA, b"late"))


def test_sender_refuses_after_end() -> None:
    client, _ = pair()
    client.seal(END, b"")
    with pytest.raises(ChannelError):
        client.seal(DATA, b"late")


def test_wrong_key() -> None:
    """A client that talks to another enclave key (e.g. a MITM) cannot be read."""
    client, _ = pair()
    _, other_enclave = pair()
    with pytest.raises(ChannelError) as e:
        other_enclave.open(client.seal(DATA, CANARY))
    assert CANARY.decode() not in str(e.value)


@pytest.mark.parametrize("field", ["session", "quote", "nonce"])
def test_transcript_mismatch(field: str) -> None:
    ekey = X25519PrivateKey.generate()
    nonce = new_nonce()
    cpub, client = client_channel(public_bytes(ekey), nonce, b"quote", SID)
    args = {"nonce": nonce, "quote": b"quote", "session": SID}
    args[field] = {"session": b"\x02" * 16, "quote": b"quote2", "nonce": new_nonce()}[field]
    enclave = enclave_channel(ekey, cpub, args["nonce"], args["quote"], args["session"])
    with pytest.raises(ChannelError):
        enclave.open(client.seal(DATA, b"x"))


def test_invalid_peer_key() -> None:
    with pytest.raises(ChannelError):
        client_channel(bytes(32), new_nonce(), b"q", SID)
    with pytest.raises(ChannelError):
        enclave_channel(X25519PrivateKey.generate(), b"short", new_nonce(), b"q", SID)


def test_unknown_record_type() -> None:
    with pytest.raises(ValueError):
        pair()[0].seal(3, b"x")  # type: ignore[arg-type]


def test_transcript_binds_every_field() -> None:
    base = [b"c" * 32, b"e" * 32, b"n" * 32, b"quote", SID]
    ref = transcript_hash(*base)
    for i in range(len(base)):
        changed = list(base)
        changed[i] = changed[i] + b"x"
        assert transcript_hash(*changed) != ref
