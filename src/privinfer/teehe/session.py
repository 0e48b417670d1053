"""The refresh enclave's state for one session: attest, take the released key, serve the server.

Security assumption: runs inside the measured refresh enclave (teehe.enclave); the HE server
that drives it is untrusted for the data. What the enclave learns: only what `he.refresh`'s
masking leaves (every polynomial it decrypts is m + e + R with R uniform in [-2^k, 2^k), within
statistical distance 2^-(sigma+1) of a distribution independent of the data, sigma >= 40, checked
here), the public rotation steps and the session's shape; it never receives the input or output
ciphertexts (the server asks it only for KEYS and RFSH). It refuses: a key not released over this
session's attested channel, a second key, a refresh before the key, a refresh whose mask is
narrower than sigma = 40 allows, and a masked polynomial outside the window (exactly as the he
client does, `he.refresh.check_window`). The secret key is held in one bytearray (mlock'ed where
the platform allows) and SEAL's objects, and is erased (`erase`) at session end, on any refusal,
and when the server's connection drops; the enclave process of the session then exits.
"""

from __future__ import annotations

import ctypes
import math
import secrets
import time
from collections.abc import Callable, Sequence

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from privinfer.errors import InputError, SecurityError
from privinfer.he.ckks import CkksContext, CkksParams
from privinfer.he.refresh import DEFAULT_SIGMA, LocalRefreshClient, unpack_request
from privinfer.he.serial import erase_buffer
from privinfer.tee.attestation import NONCE_LEN, attest
from privinfer.tee.channel import RecordType, enclave_channel, public_bytes
from privinfer.tee.measurement import EnclaveIdentity
from privinfer.teehe.protocol import SESSION_ID_LEN, context, pack_ack, unpack_key_release

NOT_OWNED = "This refresh enclave holds no key for that session."


def mlock(buf: bytearray) -> bool:
    """Keep `buf` out of swap where the platform allows (mlock); False where it does not."""
    if not buf:
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        arr = (ctypes.c_char * len(buf)).from_buffer(buf)
        return int(libc.mlock(ctypes.addressof(arr), ctypes.c_size_t(len(buf)))) == 0
    except (OSError, AttributeError, TypeError):
        return False


class RefreshSession:
    """One attested session of the refresh enclave (one server connection, one client key)."""

    def __init__(self, quotes, identity: EnclaveIdentity) -> None:
        self.quotes, self.identity = quotes, identity
        self.session_id = secrets.token_bytes(SESSION_ID_LEN)
        self._x25519: X25519PrivateKey | None = None
        self._nonce = self._quote = b""
        self._key: bytearray | None = None
        self.ctx: CkksContext | None = None
        self._refresh: LocalRefreshClient | None = None
        self.locked = False
        self.refreshes = 0
        self.refresh_cpu_s = 0.0  # CPU time inside refreshes (Galois keys excluded)
        self.view: Callable[[bytes], None] | None = None  # tests: see what the enclave decrypts

    def attest(self, nonce: bytes) -> tuple[bytes, bytes]:
        """Quote a fresh X25519 key bound to the client's nonce and this session: (pub, quote)."""
        if self._x25519 is not None:
            raise InputError("This session is already attested.")
        if len(nonce) != NONCE_LEN:
            raise InputError("An attestation nonce is 32 bytes.")
        self._x25519 = X25519PrivateKey.generate()
        pub = public_bytes(self._x25519)
        self._nonce = nonce
        self._quote = attest(self.quotes, self.identity, pub, nonce, context(self.session_id))
        return pub, self._quote

    def release(self, client_pub: bytes, record: bytes) -> tuple[bytes, dict[str, bytes]]:
        """Open the client's key-release record; returns (the ack record for the client, the
        public bundle the server computes with: parameters, public and relinearisation keys)."""
        if self._x25519 is None or self._key is not None:
            raise SecurityError("A key is released once, after this session's attestation.")
        chan = enclave_channel(self._x25519, client_pub, self._nonce, self._quote, self.session_id)
        self._x25519 = None  # one release per attestation
        kind, body = chan.open(record)
        plain = bytearray(body)  # `body` (immutable bytes) is dropped here; `plain` is zeroed
        del body
        if kind is not RecordType.DATA:
            raise SecurityError("The key release held no key.")
        try:
            params_bytes, key = unpack_key_release(plain)
        finally:
            erase_buffer(plain)
        self._key = key
        self.locked = mlock(key)
        params = CkksParams.from_bytes(params_bytes)
        params.check_security()
        self.ctx = CkksContext.from_secret_key(params, key, b"")
        bundle = self.ctx.make_public_bundle()
        self._refresh = LocalRefreshClient(self.ctx)
        ack = chan.seal(RecordType.DATA, pack_ack(self.ctx.session_id))
        return ack, bundle

    def _owned(self, session: str) -> CkksContext:
        if self.ctx is None or not secrets.compare_digest(session, self.session_id.hex()):
            raise SecurityError(NOT_OWNED)
        return self.ctx

    def galois(self, session: str, steps: Sequence[int]) -> tuple[list[int], bytes]:
        ctx = self._owned(session)
        if any(not isinstance(s, int) or not 0 < s < ctx.params.slots for s in steps):
            raise InputError("Rotation steps must be integers in (0, slots).")
        return ctx.galois_batch(steps)

    def refresh(self, session: str, payload: bytes) -> bytes:
        """Answer a refresh exactly as the he client does (`LocalRefreshClient`, window check
        included), after checking that the mask is wide enough for sigma >= 40."""
        ctx = self._owned(session)
        k, b, _ = unpack_request(payload)
        if k - b < DEFAULT_SIGMA + math.ceil(math.log2(ctx.params.poly_modulus_degree)):
            raise SecurityError("A refresh mask narrower than sigma = 40 allows was refused.")
        if self.view is not None:
            self.view(payload)
        assert self._refresh is not None
        t0 = time.process_time()
        out = self._refresh.refresh(payload)
        self.refresh_cpu_s += time.process_time() - t0
        self.refreshes += 1
        return out

    def erase(self) -> None:
        """Zero the key and drop every object holding it."""
        if self.ctx is not None:
            self.ctx.erase_secret_key()
        if self._key is not None:
            erase_buffer(self._key)
        self._key, self.ctx, self._refresh, self._x25519 = None, None, None, None
