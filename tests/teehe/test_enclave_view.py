"""The refresh enclave's view (every masked polynomial it decrypts) does not depend on the
secret input, and the enclave answers refreshes as the he client does.

Two secrets are encrypted under a client key that was released to an in-process enclave session
(the same RefreshSession the enclave process runs); the server's Refresher masks and sends them
to it. We pool every coefficient the enclave decrypted and compare, under the two secrets, the
histograms of (a) its top bits (y / 2^k in 64 bins) and (b) its lowest byte (256 bins) with a
two-sample chi-square test; 2 statistics at family-wise level 1e-6 (Bonferroni over 4, a
margin). The companion test removes the mask (a server that forgets it) and shows the same
statistic flags the difference. The masks come from the OS CSPRNG, so the test can fail by
chance with probability at most 1e-6.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tests.mpc.test_security_view import chi2_two_sample

from privinfer.he import rns, wire
from privinfer.he.refresh import LocalRefreshClient, Refresher, unpack_request

from .inprocess import released

CRIT_63_DOF = 136.36  # scipy.stats.chi2.ppf(1 - 1e-6 / 4, 63)
CRIT_255_DOF = 385.10  # scipy.stats.chi2.ppf(1 - 1e-6 / 4, 255)
CTS = 2


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return released(tmp_path_factory.mktemp("teehe-view"))


class _Direct:
    def __init__(self, sess) -> None:
        self.sess = sess

    def refresh(self, payload: bytes) -> bytes:
        return self.sess.refresh(self.sess.session_id.hex(), payload)


def _view(setup, values: np.ndarray, unmasked: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(y / 2^k, y mod 256) of every coefficient the enclave decrypted for `values`."""
    client, sess, server = setup
    seen: list[bytes] = []
    sess.view = seen.append
    refresher = Refresher(server, _Direct(sess))
    if unmasked:
        refresher._mask = lambda: np.zeros_like(Refresher._mask(refresher))  # type: ignore[method-assign]
    cts = []
    for _ in range(CTS):
        blob = client.ctx.encrypt_seeded(values)
        ct = wire.unpack_ciphertexts(server, wire.pack_blobs(client.ctx, [blob]))[0]
        cts.append(server.mod_switch_to(ct, refresher.level + 1))
    fresh = refresher.refresh(cts)
    sess.view = None
    got = client.ctx.decrypt(
        wire.unpack_ciphertexts(client.ctx, wire.pack_ciphertexts(server, fresh))[0]
    )
    assert np.abs(got[: values.size] - values).max() < 1e-3  # the refresh is exact
    tops, lows = [], []
    for payload in seen:
        k, _, data = unpack_request(payload)
        for ct in wire.unpack_ciphertexts(client.ctx, data):  # what the enclave decrypts
            lift = rns.CentredLift(
                client.ctx.decrypt_rns(ct), client.ctx.primes(client.ctx.level(ct))
            )
            y = lift.to_objects()
            tops.append(np.array([float(v) for v in y]) / 2.0**k)
            lows.append(np.array([int(v) % 256 for v in y]))
    return np.concatenate(tops), np.concatenate(lows)


def _stats(a, b) -> tuple[float, float]:
    ha = torch.histc(torch.as_tensor(a[0]), bins=64, min=-1, max=1).double()
    hb = torch.histc(torch.as_tensor(b[0]), bins=64, min=-1, max=1).double()
    la = torch.bincount(torch.as_tensor(a[1]), minlength=256).double()
    lb = torch.bincount(torch.as_tensor(b[1]), minlength=256).double()
    return chi2_two_sample(ha, hb), chi2_two_sample(la, lb)


def _secrets(n: int) -> tuple[np.ndarray, np.ndarray]:
    g = np.random.default_rng(7)
    return np.zeros(n), g.uniform(-200, 200, n)


def test_enclave_view_does_not_depend_on_the_secret(setup):
    a, b = _secrets(setup[0].ctx.params.slots)
    va, vb = _view(setup, a), _view(setup, b)
    assert va[0].size == vb[0].size >= CTS * setup[0].ctx.params.poly_modulus_degree
    assert np.abs(va[0]).max() < 1 and np.abs(vb[0]).max() < 1  # inside the window
    top, low = _stats(va, vb)
    assert top < CRIT_63_DOF and low < CRIT_255_DOF, (top, low)


def test_the_statistic_catches_an_unmasked_value(setup):
    a, b = _secrets(setup[0].ctx.params.slots)
    top, low = _stats(_view(setup, a, unmasked=True), _view(setup, b, unmasked=True))
    assert top > CRIT_63_DOF or low > CRIT_255_DOF
    assert low > 10 * CRIT_255_DOF  # not a near miss


def test_enclave_answers_a_refresh_as_the_he_client_does(setup):
    client, sess, server = setup
    values = np.linspace(-50, 50, 64)
    blob = client.ctx.encrypt_seeded(values)
    ct = wire.unpack_ciphertexts(server, wire.pack_blobs(client.ctx, [blob]))[0]
    ct = server.mod_switch_to(ct, 3)
    outs = []
    for holder in (_Direct(sess), LocalRefreshClient(client.ctx)):
        fresh = Refresher(server, holder).refresh([ct])[0]
        back = wire.unpack_ciphertexts(client.ctx, wire.pack_ciphertexts(server, [fresh]))[0]
        assert server.level(fresh) == server.params.top_level
        outs.append(client.ctx.decrypt(back)[:64])
    assert np.abs(outs[0] - values).max() < 1e-3 and np.abs(outs[0] - outs[1]).max() < 1e-3
