import numpy as np
import pytest

from privinfer.errors import InputError, SecurityError
from privinfer.he import wire
from privinfer.he.ckks import PARAMS_8192, PARAMS_16384, CkksContext, CkksParams
from privinfer.he.serial import save_bytes as _save_bytes


@pytest.mark.parametrize(
    "params",
    [
        CkksParams(8192, (60, 40, 40, 40, 60), 40),  # 240 > 218
        CkksParams(4096, (40, 30, 40), 30),  # 110 > 109
        CkksParams(16384, (60,) * 8, 40),  # 480 > 438
        CkksParams(3000, (30, 30), 20),  # not a power of two in the table
    ],
)
def test_insecure_parameters_refused(params):
    with pytest.raises(SecurityError, match="128-bit"):
        CkksContext(params)


def test_presets_are_within_the_128_bit_table():
    for params, limit in ((PARAMS_8192, 218), (PARAMS_16384, 438)):
        params.check_security()
        assert sum(params.coeff_modulus_bits) <= limit
    CkksParams(4096, (40, 29, 40), 30).check_security()  # exactly 109 bits is allowed


def test_encrypt_decrypt_add_multiply_rotate(client8192, rng):
    c = client8192
    c.add_rotation_steps([3])
    x, y = rng.uniform(-2, 2, c.params.slots), rng.uniform(-2, 2, c.params.slots)
    a, b = c.encrypt(x), c.encrypt(y)
    assert c.level(a) == c.params.top_level
    assert np.abs(c.decrypt(a) - x).max() < 1e-4
    assert np.abs(c.decrypt(c.add(a, b)) - (x + y)).max() < 1e-4
    prod = c.multiply(a, b)
    assert c.level(prod) == c.params.top_level - 1
    assert np.abs(c.decrypt(prod) - x * y).max() < 1e-3
    assert np.abs(c.decrypt(c.rotate(a, 3)) - np.roll(x, -3)).max() < 1e-3
    scaled = c.multiply_values(a, 0.5)
    assert scaled.scale == a.scale  # encode_for_mul keeps the scale exactly
    assert np.abs(c.decrypt(scaled) - x / 2).max() < 1e-4
    # adding across levels aligns automatically
    assert np.abs(c.decrypt(c.add(prod, a)) - (x * y + x)).max() < 1e-3


def test_missing_rotation_key_is_a_clear_error(client8192):
    with pytest.raises(InputError, match="Galois key"):
        client8192.rotate(client8192.encrypt([1.0]), 1234)


def test_products_stop_at_the_floor_level(client8192):
    c = client8192
    ct = c.encrypt([1.0, 2.0])
    ct = c.multiply(ct, ct)
    ct = c.multiply(ct, ct)
    assert c.level(ct) == c.params.floor_level
    with pytest.raises(InputError, match="refresh"):
        c.multiply(ct, ct)


def test_server_context_from_public_material_cannot_decrypt(client8192, rng):
    client8192.add_rotation_steps([1])
    server = CkksContext.from_public(client8192.export_public())
    assert not server.has_secret_key
    assert server.session_id == client8192.session_id
    x = rng.normal(size=16)
    ct = server.ciphertext_from_bytes(client8192.ciphertext_to_bytes(client8192.encrypt(x)))
    rotated = server.rotate(ct, 1)
    assert np.abs(client8192.decrypt(rotated)[:15] - x[1:]).max() < 1e-3
    with pytest.raises(SecurityError, match="no secret key"):
        server.decrypt(rotated)


def test_ciphertext_from_another_session_is_refused(client8192):
    other = CkksContext.create_client(PARAMS_8192)
    msg = wire.pack_ciphertexts(other, [other.encrypt([123.456])])
    with pytest.raises(SecurityError, match="another HE session") as exc:
        wire.unpack_ciphertexts(client8192, msg)
    assert "123.456" not in str(exc.value)
    assert len(wire.unpack_ciphertexts(other, msg)) == 1


def test_ciphertext_from_other_parameters_is_refused(client8192):
    small = CkksContext.create_client(CkksParams(4096, (40, 20, 40), 20))
    blob = small.ciphertext_to_bytes(small.encrypt([1.0]))
    with pytest.raises(SecurityError, match="does not belong"):
        client8192.ciphertext_from_bytes(blob)


def test_wire_rejects_garbage_and_truncation(client8192):
    with pytest.raises(InputError):
        wire.unpack_ciphertexts(client8192, b"nonsense")
    msg = wire.pack_ciphertexts(client8192, [client8192.encrypt([1.0])])
    with pytest.raises(InputError, match="Truncated"):
        wire.unpack_ciphertexts(client8192, msg[:-10])


def test_exported_bundle_holds_no_secret_key(client8192):
    bundle = client8192.export_public()
    assert set(bundle) == {"params", "public_key", "relin_keys", "galois_keys", "galois_steps"}
    secret = _save_bytes(client8192._secret_key)[16:80]  # canary: a slice of the key body
    assert all(secret not in blob for blob in bundle.values())


def test_raw_integer_polynomial_round_trip(client8192, rng):
    c = client8192
    x = rng.uniform(-1, 1, c.params.slots)
    ct = c.encrypt(x)
    coeffs = c.decrypt_integer_poly(ct)
    assert max(abs(int(v)) for v in coeffs).bit_length() <= c.params.scale_bits + 1
    rebuilt = c.add_integer_poly(c.encrypt_zero(c.params.top_level, ct.scale), coeffs)
    assert np.abs(c.decrypt(rebuilt) - x).max() < 1e-4


def test_product_with_all_zero_public_values_is_a_fresh_zero(client8192):
    """RoPE at position 0 multiplies by sin = 0 everywhere; SEAL refuses that transparent
    product, so a one-token prompt failed under he. The result is now an encryption of zero
    at the product's level and scale, with a fresh c1."""
    c = client8192
    ct = c.encrypt([1.5, -2.0, 3.0])
    zero = c.multiply_values(ct, np.zeros(c.params.slots))
    ref = c.multiply_values(ct, np.ones(c.params.slots))
    assert c.level(zero) == c.level(ref) and zero.scale == ref.scale
    assert np.max(np.abs(c.decrypt(zero)[:8])) < 1e-4
    assert np.allclose(c.decrypt(c.add(zero, ref))[:3], [1.5, -2.0, 3.0], atol=1e-4)
    assert np.max(np.abs(c.decrypt(c.multiply_values(ct, 0.0))[:8])) < 1e-4
