"""Secure channel client <-> enclave: X25519, HKDF-SHA256 over the transcript, AES-256-GCM records.

Security assumption: the enclave's X25519 public key was bound to a verified quote
(attestation.py) and the client checked it before sending anything. The client is anonymous.
Each direction has its own key; nonces are the record sequence number (never reused: a channel
refuses to seal past 2^63 records). Any error (replay, reorder, reflection, truncation, tamper,
data after END) ends the session: the channel refuses all further use.

Key schedule:
    transcript = lp("privinfer-tee-v1 channel") lp(client_pub) lp(enclave_pub) lp(nonce)
                 lp(SHA-256(quote)) lp(session_id)
    salt       = SHA-256(transcript)
    key_c2e    = HKDF-SHA256(ikm=X25519 shared secret, salt, info="privinfer-tee-v1 key c2e")
    key_e2c    = HKDF-SHA256(ikm=X25519 shared secret, salt, info="privinfer-tee-v1 key e2c")

Record (big-endian): type u8 (1 DATA, 2 END) || seq u64 || AES-256-GCM ciphertext+tag, with
nonce = 4 zero bytes || seq, AAD = lp(session_id) || direction u8 || seq u64 || type u8.
"""

from __future__ import annotations

import enum
import hashlib
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from privinfer.errors import SecurityError
from privinfer.tee.measurement import lp

_HDR = struct.Struct(">BQ")
TAG_LEN = 16
MAX_PLAINTEXT = 16 << 20
MAX_SEQ = (1 << 63) - 1
C2E, E2C = 1, 2


class ChannelError(SecurityError):
    """A record was rejected or the channel is no longer usable; the session is over."""


class RecordType(enum.IntEnum):
    DATA = 1
    END = 2


def public_bytes(key: X25519PrivateKey) -> bytes:
    """Raw 32-byte X25519 public key of `key`."""
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def transcript_hash(
    client_pub: bytes, enclave_pub: bytes, nonce: bytes, quote: bytes, session_id: bytes
) -> bytes:
    """SHA-256 of the handshake transcript (both keys, nonce, quote hash, session id)."""
    t = (
        lp(b"privinfer-tee-v1 channel")
        + lp(client_pub)
        + lp(enclave_pub)
        + lp(nonce)
        + lp(hashlib.sha256(quote).digest())
        + lp(session_id)
    )
    return hashlib.sha256(t).digest()


def _derive(own: X25519PrivateKey, peer_pub: bytes, th: bytes) -> tuple[bytes, bytes]:
    try:
        shared = own.exchange(X25519PublicKey.from_public_bytes(peer_pub))
    except ValueError:
        raise ChannelError("key exchange failed (invalid peer key)") from None
    keys = []
    for label in (b"privinfer-tee-v1 key c2e", b"privinfer-tee-v1 key e2c"):
        keys.append(HKDF(hashes.SHA256(), 32, th, label).derive(shared))
    return keys[0], keys[1]


class SecureChannel:
    """One side of an established session. Not thread-safe; use one per session."""

    def __init__(
        self, send_key: bytes, recv_key: bytes, session_id: bytes, *, is_client: bool
    ) -> None:
        self._send = AESGCM(send_key)
        self._recv = AESGCM(recv_key)
        self._sid = lp(session_id)
        self._send_dir, self._recv_dir = (C2E, E2C) if is_client else (E2C, C2E)
        self._send_seq = 0
        self._recv_seq = 0
        self.sent_end = False
        self.received_end = False
        self.broken = False

    def _aad(self, direction: int, seq: int, rtype: int) -> bytes:
        return self._sid + struct.pack(">BQB", direction, seq, rtype)

    def _fail(self, why: str) -> ChannelError:
        self.broken = True
        return ChannelError(why)

    def seal(self, record_type: RecordType, plaintext: bytes) -> bytes:
        """Encrypt one record. After END is sent, or after any error, raises ChannelError."""
        if self.broken:
            raise ChannelError("channel closed after an error")
        if self.sent_end:
            raise self._fail("cannot send after END")
        rtype = RecordType(record_type)
        if len(plaintext) > MAX_PLAINTEXT:
            raise ValueError("record too large")
        seq = self._send_seq
        if seq >= MAX_SEQ:
            raise self._fail("sequence numbers exhausted")
        nonce = b"\0\0\0\0" + struct.pack(">Q", seq)
        ct = self._send.encrypt(nonce, plaintext, self._aad(self._send_dir, seq, rtype))
        self._send_seq = seq + 1
        if rtype is RecordType.END:
            self.sent_end = True
        return _HDR.pack(rtype, seq) + ct

    def open(self, record: bytes) -> tuple[RecordType, bytes]:
        """Decrypt the next record in order. Any rejection ends the channel (ChannelError)."""
        if self.broken:
            raise ChannelError("channel closed after an error")
        if self.received_end:
            raise self._fail("record after END")
        if len(record) < _HDR.size + TAG_LEN:
            raise self._fail("record truncated")
        rtype_raw, seq = _HDR.unpack_from(record, 0)
        if rtype_raw not in (RecordType.DATA, RecordType.END):
            raise self._fail("unknown record type")
        if seq != self._recv_seq:
            raise self._fail("record out of order or replayed")
        nonce = b"\0\0\0\0" + struct.pack(">Q", seq)
        try:
            pt = self._recv.decrypt(
                nonce, record[_HDR.size :], self._aad(self._recv_dir, seq, rtype_raw)
            )
        except InvalidTag:
            raise self._fail("record failed authentication") from None
        self._recv_seq = seq + 1
        rtype = RecordType(rtype_raw)
        if rtype is RecordType.END:
            self.received_end = True
        return rtype, pt

    def require_end(self) -> None:
        """Call when the transport closes: raises ChannelError if the peer never sent END."""
        if not self.received_end:
            raise self._fail("stream ended without END (truncated)")


def client_channel(
    enclave_pub: bytes, nonce: bytes, quote: bytes, session_id: bytes
) -> tuple[bytes, SecureChannel]:
    """Client side, after verify_attestation succeeded: returns (client_pub to send, channel)."""
    own = X25519PrivateKey.generate()
    mine = public_bytes(own)
    th = transcript_hash(mine, enclave_pub, nonce, quote, session_id)
    c2e, e2c = _derive(own, enclave_pub, th)
    return mine, SecureChannel(c2e, e2c, session_id, is_client=True)


def enclave_channel(
    enclave_key: X25519PrivateKey, client_pub: bytes, nonce: bytes, quote: bytes, session_id: bytes
) -> SecureChannel:
    """Enclave side: `enclave_key` is this session's ephemeral key (its public half was quoted)."""
    th = transcript_hash(client_pub, public_bytes(enclave_key), nonce, quote, session_id)
    c2e, e2c = _derive(enclave_key, client_pub, th)
    return SecureChannel(e2c, c2e, session_id, is_client=False)
