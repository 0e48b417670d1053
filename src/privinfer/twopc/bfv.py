"""BFV adapter over TenSEAL's `sealapi` for the two-party HE linear layers: the one module of
`twopc` that imports tenseal (one adapter module per scheme; CKKS lives in `he/ckks.py`).

Threat model: semi-honest client and server. The client (party 1) alone holds the secret key;
the server (party 0) holds the client's public key (for re-randomising) and sees only the
client's ciphertexts. Security: RLWE at 128 bits by the HomomorphicEncryption.org table
(N = 8192, 218 coefficient-modulus bits, ternary secret; SEAL's own TC128 check too).

Parameters (`docs/mpc-he.md` derives them): plaintext modulus t = 2^52 (coefficient encoding,
no batching, no rotations, no key switching), three 55/57/58-bit data primes all = 1 mod 2^52,
so q = 1 mod t and a plaintext product adds no t-sized noise term, and a 48-bit special prime
(unused: nothing here switches keys). The server floods the noise at q (2^b, b <= `MAX_FLOOD_BITS`)
and switches to q'' = p1 p2 (112 bits) before replying; the client decrypts at q''.
The secret key is never serialised. SEAL's file-only load goes through anonymous memory files;
a payload SEAL rejects, or with residues out of range, is a PeerError naming no data.
"""

from __future__ import annotations

import os
import struct
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import tenseal.sealapi as seal
import zstandard

from privinfer.errors import SecurityError
from privinfer.net.peer import PeerError
from privinfer.twopc import bfv_reply

N = 8192
T_BITS = 52
T = 1 << T_BITS
DATA_PRIMES = (7 * T + 1, 25 * T + 1, 40 * T + 1)  # 55, 57, 58 bits; each = 1 mod 2^52
SPECIAL_BITS = 48
REPLY_PRIMES = DATA_PRIMES[:2]  # q'': the level the reply travels at
NOISE_MAX = 21  # SEAL 4's centred binomial error (sigma 3.2) lies in [-21, 21]
MAX_COEFF_BITS_128 = {1024: 27, 2048: 54, 4096: 109, 8192: 218, 16384: 438, 32768: 881}
Q = DATA_PRIMES[0] * DATA_PRIMES[1] * DATA_PRIMES[2]
Q_REPLY = REPLY_PRIMES[0] * REPLY_PRIMES[1]
# Flooding 2^b at q lands as 2^b q''/q after the switch; decryption at q'' needs the total
# noise under q''/(2t): 2^(b+1) q''/q + (N + 3)/2 < q''/(2t) - 1 holds for b <= MAX_FLOOD_BITS.
MAX_FLOOD_BITS = (Q // (8 * T)).bit_length() - 2
# Decryption at q'' after the flood (2^b q''/q), the switch's rounding ((N + 3)/2) and the
# reply's dropped low bits (bfv_reply: 2^(d-1) (N + 1)) must stay under q''/(2t):
assert (Q_REPLY << MAX_FLOOD_BITS) // Q + (N + 3) // 2 + (N + 1) * (
    1 << (bfv_reply.DROP_BITS - 1)
) < Q_REPLY // (4 * T), "BFV reply parameters leave no decryption margin"


def check_security(n: int, total_bits: int) -> None:
    """Raise SecurityError unless (n, total coefficient-modulus bits) is 128-bit secure."""
    if n not in MAX_COEFF_BITS_128 or total_bits > MAX_COEFF_BITS_128[n]:
        raise SecurityError(
            f"BFV parameters are insecure: {total_bits} coefficient-modulus bits for N={n}."
        )


@contextmanager
def _scratch_path() -> Iterator[str]:
    """SEAL's Python binding saves and loads by path only: an anonymous memory file (memfd) keeps
    ciphertexts and keys off every filesystem (a private temp dir where memfd is missing)."""
    if hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd"):
        fd = os.memfd_create("privinfer-bfv", os.MFD_CLOEXEC)
        try:
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
    else:  # pragma: no cover - non-Linux
        with tempfile.TemporaryDirectory(prefix="privinfer-bfv-") as d:
            yield os.path.join(d, "obj")


def _save(obj) -> bytes:  # type: ignore[no-untyped-def]
    with _scratch_path() as path:
        obj.save(path)
        with open(path, "rb") as f:
            return f.read()


def _load(obj, context, data: bytes, peer: int, what: str):  # type: ignore[no-untyped-def]
    with _scratch_path() as path:
        with open(path, "wb") as f:
            f.write(data)
        try:
            obj.load(context, path)
        except (ValueError, RuntimeError, TypeError):
            raise PeerError(peer, f"malformed {what}") from None
    return obj


_HEADER = struct.Struct("<HBBBBHQ")  # SEALHeader: magic, size, major, minor, compr, reserved, total
_MAGIC = 0xA15E


def _members(data: bytes) -> bytes:
    """The serialised members of a SEAL object this process saved (zstd by default)."""
    magic, _, _, _, mode, _, size = _HEADER.unpack_from(data)
    if magic != _MAGIC or size != len(data) or mode not in (0, 2):
        raise SecurityError("Not a SEAL object this adapter can read.")
    body = data[_HEADER.size :]
    return body if mode == 0 else zstandard.ZstdDecompressor().decompress(body, 1 << 31)


class BfvContext:
    """The fixed BFV parameters as a SEAL context (both parties build the same one)."""

    def __init__(self) -> None:
        special = seal.CoeffModulus.Create(N, [SPECIAL_BITS])[0]
        moduli = [seal.Modulus(p) for p in DATA_PRIMES] + [special]
        check_security(N, sum(m.bit_count() for m in moduli))
        parms = seal.EncryptionParameters(seal.SCHEME_TYPE.BFV)
        parms.set_poly_modulus_degree(N)
        parms.set_coeff_modulus(moduli)
        parms.set_plain_modulus(T)
        self.seal = seal.SEALContext(parms, True, seal.SEC_LEVEL_TYPE.TC128)
        if not self.seal.parameters_set():
            raise SecurityError("SEAL rejected the BFV parameters.")
        top = self.seal.first_context_data()
        self.top = top.parms_id()
        self.reply = top.next_context_data().parms_id()
        self.evaluator = seal.Evaluator(self.seal)
        probe = _save(seal.Plaintext("1"))
        self._version = probe[3:5]

    def _stream(self, body: bytes) -> bytes:
        v = self._version
        return _HEADER.pack(_MAGIC, 16, v[0], v[1], 0, 0, 16 + len(body)) + body

    def _array(self, values: np.ndarray) -> bytes:
        values = np.ascontiguousarray(values, np.uint64)
        return self._stream(struct.pack("<Q", values.size) + values.tobytes())

    def plaintext(self, coeffs: np.ndarray) -> seal.Plaintext:
        """A coefficient-form plaintext from N integers in [0, t) (built as an uncompressed SEAL
        stream and loaded: the binding exposes no plaintext buffer)."""
        body = bytes(32) + struct.pack("<Qd", N, 1.0) + self._array(coeffs)
        return _load(seal.Plaintext(), self.seal, self._stream(body), -1, "plaintext")

    def raw_ciphertext(self, polys: np.ndarray, parms_id: list[int], peer: int) -> seal.Ciphertext:
        """A coefficient-form ciphertext from its residues (2, k, N) at `parms_id` (SEAL checks
        every residue against its prime on load)."""
        size, k, n = polys.shape
        meta = (
            struct.pack("<4Q", *parms_id) + bytes([0]) + struct.pack("<QQQdQ", size, n, k, 1.0, 1)
        )
        return _load(
            seal.Ciphertext(),
            self.seal,
            self._stream(meta + self._array(polys)),
            peer,
            "ciphertext",
        )

    @staticmethod
    def residues(ct: seal.Ciphertext) -> np.ndarray:
        """The residues (size, k, N) of a ciphertext."""
        body = _members(_save(ct))
        size, n, k = struct.unpack_from("<QQQ", body, 33)
        # members: parms_id (32), NTT flag (1), size, N, k, scale, correction (40), array
        # header (16) and count (8), then the data
        arr = np.frombuffer(body, np.uint64, count=size * k * n, offset=33 + 40 + 24)
        return arr.reshape(size, k, n).copy()

    @staticmethod
    def coefficients(pt: seal.Plaintext) -> np.ndarray:
        """The N coefficients of a coefficient-form plaintext (zero-padded)."""
        body = _members(_save(pt))
        count = struct.unpack_from("<Q", body, 32)[0]
        out = np.zeros(N, np.uint64)
        out[: min(count, N)] = np.frombuffer(body, np.uint64, count=count, offset=32 + 16 + 24)[:N]
        return out

    def plaintext_ntt(self, coeffs: np.ndarray) -> seal.Plaintext:
        """`plaintext`, moved into NTT form at the top level (for products with NTT ciphertexts;
        coefficients >= t/2 count as negative)."""
        pt = self.plaintext(coeffs)
        self.evaluator.transform_to_ntt_inplace(pt, self.top)
        return pt

    def multiply_plain(self, ct: seal.Ciphertext, pt: seal.Plaintext) -> seal.Ciphertext:
        """ct * pt into a new ciphertext (both in NTT form)."""
        out = seal.Ciphertext()
        self.evaluator.multiply_plain(ct, pt, out)
        return out


class BfvClient:
    """Party 1's side: key generation, encryption of its share, decryption of replies."""

    def __init__(self, ctx: BfvContext) -> None:
        self.ctx = ctx
        keygen = seal.KeyGenerator(ctx.seal)
        secret = keygen.secret_key()
        self._public = seal.PublicKey()
        keygen.create_public_key(self._public)
        self._encryptor = seal.Encryptor(ctx.seal, secret)
        self._decryptor = seal.Decryptor(ctx.seal, secret)

    def public_key_bytes(self) -> bytes:
        return _save(self._public)

    def encrypt(self, coeffs: np.ndarray) -> bytes:
        """A seeded symmetric encryption of N coefficients in [0, t) (c1 travels as a seed)."""
        with _scratch_path() as path:
            self._encryptor.encrypt_symmetric(self.ctx.plaintext(coeffs)).save(path)
            with open(path, "rb") as f:
                return f.read()

    def decrypt_reply(self, payload: bytes, positions: np.ndarray, peer: int) -> np.ndarray:
        """The plaintext coefficients at `positions` of a reply (`reply_size` bytes)."""
        if len(payload) != reply_size(positions.size):
            raise PeerError(peer, "reply has the wrong length")
        c1, c0 = _unpack_reply(payload, positions.size, peer)
        polys = np.zeros((2, 2, N), np.uint64)
        polys[0][:, positions] = c0
        polys[1] = c1
        ct = self.ctx.raw_ciphertext(polys, self.ctx.reply, peer)
        pt = seal.Plaintext()
        self._decryptor.decrypt(ct, pt)
        return self.ctx.coefficients(pt)[positions]


def reply_size(n_positions: int) -> int:
    return bfv_reply.WIDTH * (N + n_positions)


def _unpack_reply(payload: bytes, n_pos: int, peer: int) -> tuple[np.ndarray, np.ndarray]:
    """(c1 residues (2, N), c0 residues (2, n_pos)) of a compact reply."""
    w = bfv_reply.WIDTH
    c1 = bfv_reply.expand(payload[: w * N], *REPLY_PRIMES)
    c0 = bfv_reply.expand(payload[w * N :], *REPLY_PRIMES)
    if c1 is None or c0 is None:
        raise PeerError(peer, "reply residue out of range")
    return np.stack(c1), np.stack(c0)


_SHIFTS4 = np.arange(0, 64, 4, dtype=np.uint64)[:, None]


def _flood_residues(noise: np.ndarray, bits: int) -> np.ndarray:
    """Residues (3, N) of E = U - 2^bits, where U is the low bits + 1 bits of each row's two
    words (lo, hi): E uniform in [-2^bits, 2^bits) (64 <= bits < 127). U goes in 4-bit digits
    d_k: acc = (acc + d_k (2^(4k) mod p)) mod p stays under 2^63 in uint64."""
    if not 64 <= bits < 127:
        raise ValueError("flood bits out of range")
    hi = noise[:, 1] & np.uint64((1 << (bits + 1 - 64)) - 1)
    d = np.concatenate(
        [
            (np.ascontiguousarray(noise[:, 0])[None, :] >> _SHIFTS4) & np.uint64(15),
            (hi[None, :] >> _SHIFTS4[: (bits + 1 - 64 + 3) // 4]) & np.uint64(15),
        ]
    )
    out = np.empty((len(DATA_PRIMES), noise.shape[0]), np.uint64)
    for i, p in enumerate(DATA_PRIMES):
        acc = np.zeros(noise.shape[0], np.uint64)
        for k in range(d.shape[0]):
            acc += d[k] * np.uint64(pow(2, 4 * k, p))
            acc %= np.uint64(p)
        out[i] = (acc + np.uint64(p - pow(2, bits, p))) % np.uint64(p)
    return out


class BfvServer:
    """Party 0's side: loads the client's ciphertexts, multiplies plaintexts in, and seals the
    reply (mask, re-randomise, flood, switch down, drop unused coefficients)."""

    def __init__(self, ctx: BfvContext, public_key: bytes, peer: int) -> None:
        self.ctx = ctx
        self.peer = peer
        pk = _load(seal.PublicKey(), ctx.seal, public_key, peer, "public key")
        self._encryptor = seal.Encryptor(ctx.seal, pk)

    def load_input(self, data: bytes) -> seal.Ciphertext:
        """A client ciphertext, checked: fresh size, top level, coefficient form."""
        ct = _load(seal.Ciphertext(), self.ctx.seal, data, self.peer, "ciphertext")
        if ct.size() != 2 or list(ct.parms_id()) != list(self.ctx.top) or ct.is_ntt_form():
            raise PeerError(self.peer, "ciphertext at the wrong level or size")
        return ct

    def zero(self) -> seal.Ciphertext:
        """A fresh public-key encryption of zero at the top level (coefficient form)."""
        out = seal.Ciphertext()
        self._encryptor.encrypt_zero(out)
        return out

    def sanitizer(self, mask: np.ndarray, flood_bits: int, noise: np.ndarray) -> seal.Ciphertext:
        """Input-independent (can run offline): a fresh public-key encryption of the mask (N
        coefficients in [0, t)) with `noise` (N rows of 2 uint64 words: integers uniform in
        [-2^b, 2^b), b = flood_bits) added to c0. Adding it to a result masks, re-randomises
        and floods it in one step."""
        if not 64 <= flood_bits <= MAX_FLOOD_BITS:
            raise ValueError("flood bits out of range")
        out = seal.Ciphertext()
        self._encryptor.encrypt_zero(out)
        ev = self.ctx.evaluator
        ev.add_plain_inplace(out, self.ctx.plaintext(mask))
        flood = np.zeros((2, 3, N), np.uint64)
        flood[0] = _flood_residues(noise, flood_bits)
        ev.add_inplace(out, self.ctx.raw_ciphertext(flood, self.ctx.top, -1))
        return out

    def seal_reply(
        self, acc: seal.Ciphertext, sanitizer: seal.Ciphertext, positions: np.ndarray
    ) -> bytes:
        """acc + sanitizer, switched to q'': c1 and the c0 coefficients at `positions`, each
        as its top bits (`bfv_reply`)."""
        ev = self.ctx.evaluator
        ev.add_inplace(acc, sanitizer)
        ev.mod_switch_to_next_inplace(acc)
        out = self.ctx.residues(acc)
        p1, p2 = REPLY_PRIMES
        c1 = bfv_reply.compress(out[1, 0], out[1, 1], p1, p2)
        return c1 + bfv_reply.compress(out[0, 0, positions], out[0, 1, positions], p1, p2)
