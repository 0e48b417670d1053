"""CKKS parameter sets and their 128-bit security check (HomomorphicEncryption.org table).

Security assumption: RLWE with a ternary secret; the table bounds the total coefficient-modulus
bits per ring degree for 128-bit classical security. Anything above it is refused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from privinfer.errors import InputError, SecurityError

# HomomorphicEncryption.org standard, 128-bit classical security, ternary secret.
MAX_COEFF_BITS_128 = {1024: 27, 2048: 54, 4096: 109, 8192: 218, 16384: 438, 32768: 881}


@dataclass(frozen=True)
class CkksParams:
    """CKKS parameters: data primes first (q0 is the decryption prime), special prime last."""

    poly_modulus_degree: int
    coeff_modulus_bits: tuple[int, ...]
    scale_bits: int

    @property
    def slots(self) -> int:
        return self.poly_modulus_degree // 2

    @property
    def top_level(self) -> int:
        """Index of the top data level (number of rescales available from a fresh ciphertext)."""
        return len(self.coeff_modulus_bits) - 2

    @property
    def floor_level(self) -> int:
        """Lowest level a ct-ct product may reach: primes below it are wider than the scale
        (they hold the refresh mask), so rescaling by them would destroy precision."""
        wide = 0
        for bits in self.coeff_modulus_bits[:-1]:
            if bits <= self.scale_bits + 4:
                break
            wide += 1
        return max(wide - 1, 0)

    def check_security(self) -> None:
        """Raise SecurityError unless these parameters give 128-bit security."""
        n = self.poly_modulus_degree
        if n not in MAX_COEFF_BITS_128:
            raise SecurityError(f"CKKS poly modulus degree {n} is not in the 128-bit table.")
        total = sum(self.coeff_modulus_bits)
        if total > MAX_COEFF_BITS_128[n]:
            raise SecurityError(
                f"CKKS parameters are insecure: {total} coefficient-modulus bits exceed the "
                f"128-bit limit of {MAX_COEFF_BITS_128[n]} for N={n}."
            )
        if len(self.coeff_modulus_bits) < 2 or any(
            b > 60 or b < 20 for b in self.coeff_modulus_bits
        ):
            raise InputError("CKKS coefficient primes must number at least 2, each 20..60 bits.")
        if self.coeff_modulus_bits[-1] < max(self.coeff_modulus_bits[:-1]):
            raise InputError("The CKKS special prime (last) must be the largest prime.")

    def to_bytes(self) -> bytes:
        d = [self.poly_modulus_degree, list(self.coeff_modulus_bits), self.scale_bits]
        return json.dumps(d).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> CkksParams:
        n, bits, scale = json.loads(data.decode())
        return cls(int(n), tuple(int(b) for b in bits), int(scale))


# q0=50 and q1=48 stay for the refresh (98 bits hold a sigma=40 mask, see refresh.py); the
# 30-bit primes are rescaled away: 2 levels (8192) or 9 levels (16384) between refreshes.
# Keeping every data prime <= 50 bits under the 60-bit special prime cuts key-switching
# (rotation) noise ~70x versus q0=60: measured max error 9e-6 instead of 6.6e-4 per rotation.
PARAMS_8192 = CkksParams(8192, (50, 48, 30, 30, 60), 30)  # 218 bits <= 218
PARAMS_16384 = CkksParams(16384, (50, 48) + (30,) * 9 + (60,), 30)  # 428 bits <= 438
