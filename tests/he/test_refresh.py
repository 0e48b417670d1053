import numpy as np
import pytest

from privinfer.errors import InputError, SecurityError
from privinfer.he import wire
from privinfer.he.ckks import CkksContext, CkksParams
from privinfer.he.refresh import (
    OUT_OF_BOUND,
    LocalRefreshClient,
    Refresher,
    check_window,
    unpack_request,
)


class SpyClient(LocalRefreshClient):
    """Records what the client decrypts (the masked polynomials)."""

    def __init__(self, ctx):
        super().__init__(ctx)
        self.seen = []

    def refresh(self, payload: bytes) -> bytes:
        for ct in wire.unpack_ciphertexts(self.ctx, unpack_request(payload)[2]):
            self.seen.append(self.ctx.decrypt_integer_poly(ct))
        return super().refresh(payload)


@pytest.fixture
def session(client8192):
    server = CkksContext.from_public(client8192.export_public())
    spy = SpyClient(client8192)
    return client8192, server, spy, Refresher(server, spy)


def test_refresh_restores_top_level_and_values(session, rng):
    client, server, _, refresher = session
    x = rng.uniform(-4, 4, server.params.slots)
    ct = server.encrypt(x)
    ct = server.multiply(server.multiply(ct, ct), ct)  # x^3, down at the refresh level
    assert server.level(ct) == refresher.level == 1
    (fresh,) = refresher.refresh([ct])
    assert server.level(fresh) == server.params.top_level
    assert np.abs(client.decrypt(fresh) - x**3).max() < 5e-3
    again = server.multiply(fresh, fresh)  # usable for further products
    assert np.abs(client.decrypt(again) - x**6).max() < 0.05
    assert refresher.stats.rounds == 1 and refresher.stats.ciphertexts == 1
    assert refresher.stats.bytes_to_client > 0 and refresher.stats.bytes_to_server > 0


def test_batch_is_one_round_trip(session, rng):
    _, server, spy, refresher = session
    cts = [server.encrypt(rng.normal(size=8)) for _ in range(3)]
    refresher.refresh(cts)
    assert refresher.stats.rounds == 1 and len(spy.seen) == 3


def test_client_sees_only_the_mask(session, rng):
    client, server, spy, refresher = session
    x = np.full(server.params.slots, 3.0)
    ct = server.encrypt(x)
    data_bits = max(abs(int(v)) for v in client.decrypt_integer_poly(ct)).bit_length()
    refresher.refresh([ct])
    refresher.refresh([ct])
    first, second = spy.seen
    k = refresher.mask_bits(server.scale * 2)
    for seen in (first, second):
        bits = max(abs(int(v)) for v in seen).bit_length()
        assert bits >= k - 1 and bits >= data_bits + refresher.sigma
    assert any(a != b for a, b in zip(first, second, strict=True))  # fresh mask each time
    # the decoded slots the client could compute are unrelated to the data
    masked = client.add_integer_poly(client.encrypt_zero(refresher.level, ct.scale), first)
    slots = client.decrypt(masked)
    assert np.abs(slots - 3.0).mean() > 1e6


def test_sigma_too_large_for_parameters_is_refused(client8192):
    server = CkksContext.from_public(client8192.export_public())
    with pytest.raises(SecurityError, match="sigma=80"):
        Refresher(server, LocalRefreshClient(client8192), sigma=80)


def test_parameters_without_refresh_headroom_are_refused():
    client = CkksContext.create_client(CkksParams(8192, (40, 30, 30, 40), 30))
    with pytest.raises(SecurityError, match="refresh mask"):
        Refresher(client, LocalRefreshClient(client))


def test_ciphertext_below_refresh_level_is_refused(session):
    _, server, _, refresher = session
    ct = server.mod_switch_to(server.encrypt([1.0]), 0)
    with pytest.raises(InputError, match="below the refresh level"):
        refresher.refresh([ct])


def test_refresh_client_needs_secret_key(client8192):
    server = CkksContext.from_public(client8192.export_public())
    with pytest.raises(SecurityError):
        LocalRefreshClient(server)


def test_values_within_the_bound_pass_and_stay_in_the_window(session, rng):
    client, server, spy, refresher = session
    x = rng.uniform(-255, 255, server.params.slots)  # value bound 256
    (fresh,) = refresher.refresh([server.encrypt(x)])
    assert np.abs(client.decrypt(fresh) - x).max() < 1e-3
    k, b = refresher.mask_bits(server.scale * 2), refresher.value_bits(server.scale * 2)
    assert max(abs(int(c)) for c in spy.seen[0]) < (1 << k) - (1 << b)


@pytest.mark.parametrize("kind", ["constant", "random"])
def test_values_far_beyond_the_bound_are_refused(session, rng, kind):
    client, server, spy, refresher = session
    n = server.params.slots
    x = np.full(n, 2.0**65) if kind == "constant" else rng.choice([-1, 1], n) * 2.0**66
    with pytest.raises(SecurityError) as err:
        refresher.refresh([server.encrypt(x)])
    assert str(err.value) == OUT_OF_BOUND and not any(ch.isdigit() for ch in str(err.value))
    assert refresher.stats.rounds == 0


def test_moderate_excess_is_hidden_by_the_mask_and_refreshed_exactly(session, rng):
    """16x the bound: eps <= 15 * 2^-41, invisible to any test on the client's view (see
    refresh.py); the refresh stays exact and the range-check scalar catches such inputs."""
    client, server, _, refresher = session
    x = rng.uniform(-4096, 4096, server.params.slots)
    (fresh,) = refresher.refresh([server.encrypt(x)])
    assert np.abs(client.decrypt(fresh) - x).max() < 1e-2


def test_check_window_edges():
    k, b = 20, 5
    w = (1 << k) - (1 << b)
    check_window(np.array([w - 1, -(w - 1), 0], dtype=object), k, b)
    for bad in (w, -w):
        with pytest.raises(SecurityError):
            check_window(np.array([0, bad], dtype=object), k, b)


def test_refresh_request_without_header_is_refused(session, rng):
    client, server, _, _ = session
    payload = wire.pack_ciphertexts(server, [server.encrypt(rng.normal(size=4))])
    with pytest.raises(InputError, match="refresh request"):
        LocalRefreshClient(client).refresh(payload)


def test_the_bound_is_on_the_mean_slot_magnitude_not_the_largest(session, rng):
    """Coefficients of an encoding obey |m_k| <= scale (2/N) sum_j |z_j|: a few slots far above
    the value bound (SmolLM2's massive activations, ~2.5e4) barely move them, so such a
    ciphertext is within the refresh bound and refreshes exactly."""
    client, server, spy, refresher = session
    x = rng.uniform(-4, 4, server.params.slots)
    x[[3, 700]] = [25000.0, -24000.0]  # ~100x the value bound of 256, in two slots
    ct = server.encrypt(x)
    coeffs = client.decrypt_integer_poly(ct)
    bound = server.scale * 2 / server.params.poly_modulus_degree * np.abs(x).sum()
    assert max(abs(int(c)) for c in coeffs) <= bound * 1.01 + 2**20  # + encoding noise
    assert bound < server.scale * 16  # mean |slot| ~ 8, far below 256
    (fresh,) = refresher.refresh([ct])
    assert np.abs(client.decrypt(fresh) - x).max() < 1e-2
