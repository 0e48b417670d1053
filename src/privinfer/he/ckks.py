"""CKKS adapter over TenSEAL's `sealapi`: the one module that imports tenseal.
Security assumption: RLWE at 128 bits (HomomorphicEncryption.org table, ternary secret); the
client alone holds the secret key; a semi-honest server holds only the public, relinearisation
and Galois keys (for the rotation steps it asks for; +-2^i compose the rest) and sees only
ciphertexts.
The secret key is never serialised; SEAL's file-only save/load goes through anonymous memory
files (memfd), so nothing reaches a filesystem; error messages carry no key or plaintext.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Iterable, Sequence

import numpy as np
import tenseal.sealapi as seal

from privinfer.errors import InputError, SecurityError
from privinfer.he.packing import naf_steps
from privinfer.he.params import MAX_COEFF_BITS_128, PARAMS_8192, PARAMS_16384, CkksParams  # noqa: F401
from privinfer.he.serial import load_bytes as _load_bytes
from privinfer.he.serial import save_bytes as _save_bytes
from privinfer.he.serial import save_secret as _save_secret

Ciphertext = seal.Ciphertext
Plaintext = seal.Plaintext


class CkksContext:
    """A CKKS session: SEAL context, encoder, evaluator and the keys this side holds."""

    def __init__(self, params: CkksParams):
        params.check_security()
        self.params = params
        p = seal.EncryptionParameters(seal.SCHEME_TYPE.CKKS)
        p.set_poly_modulus_degree(params.poly_modulus_degree)
        p.set_coeff_modulus(
            seal.CoeffModulus.Create(params.poly_modulus_degree, list(params.coeff_modulus_bits))
        )
        self.seal = seal.SEALContext(p, True, seal.SEC_LEVEL_TYPE.TC128)
        if not self.seal.parameters_set():
            raise SecurityError(
                "SEAL rejected the CKKS parameters: " + self.seal.parameters_error_message()
            )
        self.scale = float(2**params.scale_bits)
        self.encoder = seal.CKKSEncoder(self.seal)
        self.evaluator = seal.Evaluator(self.seal)
        self._parms_ids: list[list[int]] = []
        self._primes: list[list[int]] = []
        cd = self.seal.first_context_data()
        while cd is not None:
            self._parms_ids.append(list(cd.parms_id()))
            self._primes.append([m.value() for m in cd.parms().coeff_modulus()])
            cd = cd.next_context_data()
        self._parms_ids.reverse()  # index == chain index == level
        self._primes.reverse()
        self._secret_key = None
        self._decryptor = None
        self.public_key = None
        self.relin_keys = None
        # one (steps, keys, serialised keys) per batch
        self._galois: list[tuple[frozenset[int], seal.GaloisKeys, bytes]] = []
        self._key_bytes: dict[str, bytes] = {}
        self._galois_by_step: dict[int, seal.GaloisKeys] = {}
        self._encryptor = None
        self.session_id = b""
        self._seal_version = b"\x04\x03"
        self._memo: dict[tuple[bytes, int, float], Plaintext] = {}  # public masks only

    @classmethod
    def create_client(cls, params: CkksParams, rotation_steps: Iterable[int] = ()) -> CkksContext:
        """Client side: generate secret, public, relin and Galois keys (only `rotation_steps`).

        Relinearisation and Galois keys are kept as SEAL's seeded serialisation (the uniform
        half of every key is a PRNG seed, expanded by whoever loads it): half the bytes on
        the wire."""
        ctx = cls(params)
        kg = seal.KeyGenerator(ctx.seal)
        ctx._secret_key = kg.secret_key()
        ctx._decryptor = seal.Decryptor(ctx.seal, ctx._secret_key)
        ctx.public_key = seal.PublicKey()  # sealapi binds no seeded public key
        kg.create_public_key(ctx.public_key)
        pk_bytes = _save_bytes(ctx.public_key)
        ctx._key_bytes = {"public_key": pk_bytes, "relin_keys": _save_bytes(kg.create_relin_keys())}
        ctx.relin_keys = _load_bytes(seal.RelinKeys(), ctx.seal, ctx._key_bytes["relin_keys"])
        ctx._keygen = kg
        ctx.add_rotation_steps(rotation_steps)
        ctx._encryptor = seal.Encryptor(ctx.seal, ctx.public_key, ctx._secret_key)
        ctx._seal_version = pk_bytes[3:5]
        ctx.session_id = hashlib.sha256(params.to_bytes() + pk_bytes).digest()[:16]
        return ctx

    def export_secret_key(self) -> bytearray:
        """Key holder only: the secret key's bytes, for release to an attested refresh enclave
        (privinfer.teehe) over its AES-GCM channel, never elsewhere. A bytearray, so that the
        caller can zero it once it is sealed (`erase_buffer`)."""
        if self._secret_key is None:
            raise SecurityError("Only the key holder holds a secret key.")
        return _save_secret(self._secret_key)

    @classmethod
    def from_secret_key(
        cls, params: CkksParams, secret: bytearray, session_id: bytes
    ) -> CkksContext:
        """Refresh enclave: a decrypting, secret-key-encrypting context from a released key,
        bound to the client's session id (SHA-256 of its parameters and public key, so the
        server's ciphertexts of this session are the only ones `wire` accepts)."""
        ctx = cls(params)
        sk = _load_bytes(seal.SecretKey(), ctx.seal, bytes(secret))
        ctx._secret_key = sk
        ctx._decryptor = seal.Decryptor(ctx.seal, sk)
        ctx._encryptor = seal.Encryptor(ctx.seal, sk)
        ctx._keygen = seal.KeyGenerator(ctx.seal, sk)
        ctx.session_id = bytes(session_id)
        return ctx

    def make_public_bundle(self) -> dict[str, bytes]:
        """Refresh enclave: fresh public and relinearisation keys from the released secret key,
        as the bundle a server loads (`from_public`); sets this context's session id to the one
        that bundle defines."""
        if self._keygen is None:
            raise SecurityError("Only the key holder can make public keys.")
        pk = seal.PublicKey()
        self._keygen.create_public_key(pk)
        pk_bytes = _save_bytes(pk)
        self.public_key = pk
        self._seal_version = pk_bytes[3:5]
        self.session_id = hashlib.sha256(self.params.to_bytes() + pk_bytes).digest()[:16]
        self._key_bytes = {
            "public_key": pk_bytes,
            "relin_keys": _save_bytes(self._keygen.create_relin_keys()),
        }
        return self.export_public()

    def erase_secret_key(self) -> None:
        """Zero the secret key's coefficients that this object can reach and drop every object
        holding a copy (SEAL's decryptor, encryptor and key generator keep their own copies,
        which are freed here; the refresh enclave also ends the session's process)."""
        if self._secret_key is not None:
            self._secret_key.data().set_zero()
        self._secret_key = self._decryptor = self._encryptor = None
        self._keygen = None

    def add_rotation_steps(self, steps: Iterable[int]) -> None:
        """Client side: create Galois keys for the steps not yet covered (a new key batch)."""
        slots = self.params.slots
        new = frozenset(s % slots for s in steps if s % slots) - self.galois_steps
        if not new:
            return
        if self._secret_key is None:
            raise SecurityError("Only the key holder can create Galois keys.")
        tool = self.seal.key_context_data().galois_tool()
        data = _save_bytes(
            self._keygen.create_galois_keys(sorted({tool.get_elt_from_step(s) for s in new}))
        )
        self._add_galois(new, _load_bytes(seal.GaloisKeys(), self.seal, data), data)

    def _add_galois(self, steps: frozenset[int], keys, data: bytes) -> None:
        self._galois.append((steps, keys, data))
        for step in steps:
            self._galois_by_step[step] = keys

    def galois_batch(self, steps: Iterable[int]) -> tuple[list[int], bytes]:
        """Client: keys for the steps not yet covered, as (steps, bytes) for `add_galois_batch`."""
        before = self.galois_steps
        self.add_rotation_steps(steps)
        if self.galois_steps == before:
            return [], b""
        new, _, data = self._galois[-1]
        return sorted(new), data

    def add_galois_batch(self, steps: Sequence[int], data: bytes) -> None:
        """Server: load a Galois key batch made by `galois_batch`."""
        if steps:
            keys = _load_bytes(seal.GaloisKeys(), self.seal, data)
            self._add_galois(frozenset(steps), keys, b"")  # a server never re-exports keys

    @property
    def galois_steps(self) -> frozenset[int]:
        return frozenset(self._galois_by_step)

    has_secret_key = property(lambda self: self._secret_key is not None)

    def export_public(self) -> dict[str, bytes]:
        """Everything a server needs, as bytes: parameters, public, relin and Galois keys."""
        return {
            "params": self.params.to_bytes(),
            "public_key": self._key_bytes.get("public_key") or _save_bytes(self.public_key),
            "relin_keys": self._key_bytes.get("relin_keys") or _save_bytes(self.relin_keys),
            "galois_keys": b"".join(struct.pack("<Q", len(b)) + b for _, _, b in self._galois),
            "galois_steps": json.dumps([sorted(s) for s, _, _ in self._galois]).encode(),
        }

    @classmethod
    def from_public(cls, bundle: dict[str, bytes]) -> CkksContext:
        """Server side: a context with public material only (no secret key, no decryption)."""
        ctx = cls(CkksParams.from_bytes(bundle["params"]))
        ctx.public_key = _load_bytes(seal.PublicKey(), ctx.seal, bundle["public_key"])
        ctx.relin_keys = _load_bytes(seal.RelinKeys(), ctx.seal, bundle["relin_keys"])
        blob, pos = bundle["galois_keys"], 0
        for steps in json.loads(bundle["galois_steps"].decode()):
            (n,) = struct.unpack_from("<Q", blob, pos)
            data = blob[pos + 8 : pos + 8 + n]
            ctx._add_galois(frozenset(steps), _load_bytes(seal.GaloisKeys(), ctx.seal, data), b"")
            pos += 8 + n
        ctx._encryptor = seal.Encryptor(ctx.seal, ctx.public_key)
        ctx._seal_version = bundle["public_key"][3:5]
        ctx.session_id = hashlib.sha256(bundle["params"] + bundle["public_key"]).digest()[:16]
        return ctx

    def level(self, obj: Ciphertext | Plaintext) -> int:
        return self.seal.get_context_data(obj.parms_id()).chain_index()

    def primes(self, level: int) -> list[int]:
        return self._primes[level]

    def modulus_bits(self, level: int) -> float:
        return float(sum(np.log2(float(q)) for q in self._primes[level]))

    def parms_id(self, level: int) -> list[int]:
        return self._parms_ids[level]

    def encode(self, values, level: int | None = None, scale: float | None = None) -> Plaintext:
        """Encode real values (a scalar or up to `slots` values) at a level and scale."""
        level = self.params.top_level if level is None else level
        scale = self.scale if scale is None else scale
        pt = seal.Plaintext()
        if np.isscalar(values):
            self.encoder.encode(float(values), self._parms_ids[level], scale, pt)
        else:
            arr = np.asarray(values, dtype=np.float64).ravel()
            if arr.size > self.params.slots:
                raise InputError(f"{arr.size} values do not fit in {self.params.slots} CKKS slots.")
            self.encoder.encode(arr.tolist(), self._parms_ids[level], scale, pt)
        return pt

    def encode_for_mul(self, values, level: int) -> Plaintext:
        """Encode at scale = the prime that the following rescale drops: the scale is kept."""
        return self.encode(values, level, float(self._primes[level][-1]))

    def encrypt(self, values, level: int | None = None) -> Ciphertext:
        ct = seal.Ciphertext()
        self._encryptor.encrypt(self.encode(values, level), ct)
        return ct

    def encrypt_zero(self, level: int, scale: float) -> Ciphertext:
        ct = seal.Ciphertext()
        self._encryptor.encrypt_zero(self._parms_ids[level], ct)
        ct.scale = scale
        return ct

    def rerandomize(self, ct: Ciphertext, flood: np.ndarray | None = None) -> Ciphertext:
        """ct + a fresh public-key encryption of zero (c1 becomes a fresh RLWE sample, and
        the noise gains the fresh encryption's) + (flood, 0) for an integer polynomial."""
        out = self.add(ct, self.encrypt_zero(self.level(ct), ct.scale))
        return out if flood is None else self.add_integer_poly(out, flood)

    def decrypt_complex(self, ct: Ciphertext) -> np.ndarray:
        """Client only: all slots as complex values (imaginary parts of a real-valued
        computation are its noise)."""
        if self._decryptor is None:
            raise SecurityError("This CKKS context holds no secret key and cannot decrypt.")
        pt = seal.Plaintext()
        self._decryptor.decrypt(ct, pt)
        return np.asarray(self.encoder.decode_complex(pt))

    def decrypt(self, ct: Ciphertext) -> np.ndarray:
        """Client only: decrypt and decode all slots to a float64 array."""
        if self._decryptor is None:
            raise SecurityError("This CKKS context holds no secret key and cannot decrypt.")
        pt = seal.Plaintext()
        self._decryptor.decrypt(ct, pt)
        return np.asarray(self.encoder.decode_double(pt))

    def add(self, a: Ciphertext, b: Ciphertext) -> Ciphertext:
        a, b = self.align(a, b)
        out = seal.Ciphertext()
        self.evaluator.add(a, b, out)
        return out

    def sub(self, a: Ciphertext, b: Ciphertext) -> Ciphertext:
        a, b = self.align(a, b)
        out = seal.Ciphertext()
        self.evaluator.sub(a, b, out)
        return out

    def negate(self, ct: Ciphertext) -> Ciphertext:
        out = seal.Ciphertext()
        self.evaluator.negate(ct, out)
        return out

    def add_many(self, cts: Sequence[Ciphertext]) -> Ciphertext:
        out = seal.Ciphertext()
        self.evaluator.add_many(list(cts), out)
        return out

    def add_plain(self, ct: Ciphertext, values) -> Ciphertext:
        out = seal.Ciphertext()
        self.evaluator.add_plain(ct, self.encode(values, self.level(ct), ct.scale), out)
        return out

    def multiply(self, a: Ciphertext, b: Ciphertext) -> Ciphertext:
        """Ciphertext product with relinearisation and rescale (one level)."""
        a, b = self.match_level(a, b)
        if self.level(a) <= self.params.floor_level:
            raise InputError("No level left for a ciphertext product; refresh first.")
        out = seal.Ciphertext()
        if a is b:
            self.evaluator.square(a, out)
        else:
            self.evaluator.multiply(a, b, out)
        self.evaluator.relinearize_inplace(out, self.relin_keys)
        self.evaluator.rescale_to_next_inplace(out)
        return out

    def multiply_plain(self, ct: Ciphertext, pt: Plaintext, rescale: bool = True) -> Ciphertext:
        out = seal.Ciphertext()
        self.evaluator.multiply_plain(ct, pt, out)
        if rescale:
            self.evaluator.rescale_to_next_inplace(out)
        return out

    pin_scale = False  # True: public products land exactly on Delta (stops scale drift)

    def multiply_values(self, ct: Ciphertext, values) -> Ciphertext:
        """Multiply by public values (scalar or per-slot); one level, scale kept (or pinned).
        All-zero values (RoPE's sine at position 0) give a fresh public-key encryption of zero
        at the product's level and scale: SEAL refuses the transparent product itself."""
        level = self.level(ct)
        if not np.any(values):
            if level <= 0:
                raise InputError("No level left for a product; refresh first.")
            return self.encrypt_zero(level - 1, self.scale if self.pin_scale else ct.scale)
        if not self.pin_scale:
            return self.multiply_plain(ct, self._public_plain(values, level, None))
        out = self.multiply_plain(
            ct, self._public_plain(values, level, self.scale * self._primes[level][-1] / ct.scale)
        )
        out.scale = self.scale  # equal up to double rounding of the same product
        return out

    _MEMO_SIZE = 48  # public masks recur (token masks, head masks): ~48 low-level plaintexts

    def _public_plain(self, values, level: int, scale: float | None) -> Plaintext:
        """Encoded public per-slot values, memoised (small LRU) by content, level and scale."""
        scale = float(self._primes[level][-1]) if scale is None else scale
        if np.isscalar(values):
            return self.encode(values, level, scale)
        arr = np.ascontiguousarray(values, dtype=np.float64)
        key = (hashlib.blake2b(arr.tobytes(), digest_size=16).digest(), level, scale)
        pt = self._memo.pop(key, None)
        if pt is None:
            pt = self.encode(arr, level, scale)
            if len(self._memo) >= self._MEMO_SIZE:
                self._memo.pop(next(iter(self._memo)))
        self._memo[key] = pt
        return pt

    def multiply_scalar_to(self, ct: Ciphertext, value: float, scale: float) -> Ciphertext:
        """Multiply by a public scalar and land exactly on `scale` after the rescale."""
        level = self.level(ct)
        pt_scale = scale * float(self._primes[level][-1]) / ct.scale
        out = self.multiply_plain(ct, self.encode(float(value), level, pt_scale))
        out.scale = scale  # equal up to double rounding of the same product
        return out

    def rotate(self, ct: Ciphertext, step: int) -> Ciphertext:
        """Cyclic left rotation of the slots by `step` (needs the Galois key for the step)."""
        step %= self.params.slots
        if step == 0:
            return ct
        keys = self._galois_by_step.get(step)
        if keys is None:  # compose from +-2^i keys when the server holds those
            parts = naf_steps(step, self.params.slots)
            if len(parts) < 2 or any(p not in self._galois_by_step for p in parts):
                raise InputError(f"No Galois key for rotation step {step}; add it at keygen.")
            for p in parts:
                ct = self.rotate(ct, p)
            return ct
        out = seal.Ciphertext()
        self.evaluator.rotate_vector(ct, step, keys, out)
        return out

    def mod_switch_to(self, ct: Ciphertext, level: int) -> Ciphertext:
        if self.level(ct) < level:
            raise InputError("Cannot raise a ciphertext's level without a refresh.")
        if self.level(ct) == level:
            return ct
        out = seal.Ciphertext()
        self.evaluator.mod_switch_to(ct, self._parms_ids[level], out)
        return out

    def match_level(self, a: Ciphertext, b: Ciphertext) -> tuple[Ciphertext, Ciphertext]:
        la, lb = self.level(a), self.level(b)
        return self.mod_switch_to(a, min(la, lb)), self.mod_switch_to(b, min(la, lb))

    def align(self, a: Ciphertext, b: Ciphertext) -> tuple[Ciphertext, Ciphertext]:
        """Bring two ciphertexts to one level and one exact scale.

        The higher one is brought down onto the lower one's (level, scale) with a product by
        1 (free in depth); only two ciphertexts at one level with different scales both pay
        a level.
        """
        la, lb = self.level(a), self.level(b)
        if la != lb and abs(a.scale / b.scale - 1.0) >= 1e-9:
            if la > lb:
                return self.to_level_scale(a, lb, b.scale), b
            return a, self.to_level_scale(b, la, a.scale)
        a, b = self.match_level(a, b)
        if abs(a.scale / b.scale - 1.0) < 1e-9:
            if a.scale != b.scale:
                b = self.copy(b)
                b.scale = a.scale
            return a, b
        return self.multiply_scalar_to(a, 1.0, self.scale), self.multiply_scalar_to(
            b, 1.0, self.scale
        )

    def to_level_scale(self, ct: Ciphertext, level: int, scale: float) -> Ciphertext:
        """Bring ct (at a strictly higher level, or already there) to exactly (level, scale)."""
        if self.level(ct) == level and ct.scale == scale:
            return ct
        if self.level(ct) <= level:
            raise InputError("Not enough levels to align ciphertext scales; refresh first.")
        return self.multiply_scalar_to(self.mod_switch_to(ct, level + 1), 1.0, scale)

    def copy(self, ct: Ciphertext) -> Ciphertext:
        return self.add_plain(ct, 0.0)

    ciphertext_to_bytes = staticmethod(_save_bytes)

    def ciphertext_from_bytes(self, data: bytes) -> Ciphertext:
        return _load_bytes(seal.Ciphertext(), self.seal, data)

    # ---- raw polynomials (hazmat: used only by the refresh protocol) -------------------
    def _raw_ciphertext(self, polys: np.ndarray, level: int, ntt: bool, scale: float) -> Ciphertext:
        from privinfer.he.rawpoly import raw_ciphertext

        return raw_ciphertext(self, polys, level, ntt, scale)

    @staticmethod
    def _raw_residues(ct: Ciphertext, polys: int | None = None) -> np.ndarray:
        from privinfer.he.rawpoly import raw_residues

        return raw_residues(ct, polys)

    def _ntt(self, res: np.ndarray, level: int) -> np.ndarray:
        """NTT form of a polynomial given by its residues (k, N) at `level` (SEAL refuses to
        NTT a ciphertext whose c1 is zero, so it travels as (res, 1) and c1 is dropped)."""
        k, n = res.shape
        polys = np.zeros((2, k, n), np.uint64)
        polys[0] = res
        polys[1, :, 0] = 1
        vehicle = self._raw_ciphertext(polys, level, ntt=False, scale=1.0)
        self.evaluator.transform_to_ntt_inplace(vehicle)
        return self._raw_residues(vehicle, polys=1)[0]

    def add_rns_poly(self, ct: Ciphertext, res: np.ndarray) -> Ciphertext:
        """ct + (NTT(x), 0) for an integer polynomial x given by its residues modulo the
        primes of ct's level (the first rows of `res` are used when it holds more primes)."""
        level, n = self.level(ct), self.params.poly_modulus_degree
        k = len(self._primes[level])
        polys = np.zeros((2, k, n), np.uint64)
        polys[0] = self._ntt(np.ascontiguousarray(res[:k]), level)
        out = seal.Ciphertext()
        self.evaluator.add(ct, self._raw_ciphertext(polys, level, ntt=True, scale=ct.scale), out)
        return out

    def add_integer_poly(self, ct: Ciphertext, coeffs: np.ndarray) -> Ciphertext:
        """ct + (NTT(coeffs), 0) for an integer polynomial (int64 or object array)."""
        from privinfer.he import rns

        primes = self._primes[self.level(ct)]
        arr = np.asarray(coeffs)
        res = rns.from_int64(arr, primes) if arr.dtype != object else rns.from_objects(arr, primes)
        return self.add_rns_poly(ct, res)

    def decrypt_rns(self, ct: Ciphertext) -> np.ndarray:
        """Client only: residues (k, N) of the decrypted polynomial m + e at ct's level."""
        if self._decryptor is None:
            raise SecurityError("This CKKS context holds no secret key and cannot decrypt.")
        from privinfer.he.rawpoly import plain_residues

        pt = seal.Plaintext()
        self._decryptor.decrypt(ct, pt)
        level, n = self.level(ct), self.params.poly_modulus_degree
        k = len(self._primes[level])
        polys = np.zeros((2, k, n), np.uint64)
        polys[0] = plain_residues(pt, k, n)
        polys[1] = 1
        vehicle = self._raw_ciphertext(polys, level, ntt=True, scale=ct.scale)
        self.evaluator.transform_from_ntt_inplace(vehicle)
        return self._raw_residues(vehicle, polys=1)[0]

    def decrypt_integer_poly(self, ct: Ciphertext) -> np.ndarray:
        """Client only: the decrypted polynomial's centred integer coefficients (object array)."""
        from privinfer.he.rns import CentredLift

        return CentredLift(self.decrypt_rns(ct), self._primes[self.level(ct)]).to_objects()

    def encrypt_rns_seeded(self, res: np.ndarray, level: int, scale: float) -> bytes:
        """Client only: a fresh secret-key encryption of the integer polynomial with residues
        `res` at `level`, serialised with its uniform half as a PRNG seed (about half the
        bytes of a public-key encryption; the receiver expands the seed when it loads it)."""
        if self._secret_key is None:
            raise SecurityError("Only the key holder encrypts with the secret key.")
        from privinfer.he.rawpoly import raw_plaintext

        k = len(self._primes[level])
        pt = raw_plaintext(self, self._ntt(np.ascontiguousarray(res[:k]), level), level, scale)
        return _save_bytes(self._encryptor.encrypt_symmetric(pt))

    def encrypt_seeded(self, values, level: int | None = None) -> bytes:
        """Client only: encrypt values with the secret key, serialised with a seed for c1."""
        if self._secret_key is None:
            raise SecurityError("Only the key holder encrypts with the secret key.")
        return _save_bytes(self._encryptor.encrypt_symmetric(self.encode(values, level)))
