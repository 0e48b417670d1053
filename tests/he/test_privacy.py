"""Circuit privacy of delivered ciphertexts (`he.privacy`, `HeOps(circuit_privacy=...)`).

The attack: the client uploads zeros, so every output value is 0 whatever the server's weight
w; but the client knows its upload's noise E (slot domain), and the delivered noise is w E plus
a rescale's rounding, so the least-squares estimate Re(sum conj(E) Y) / sum |E|^2 reads w.
"""

import math

import numpy as np
import pytest
import torch

from privinfer.he import privacy, wire
from privinfer.he.ckks import PARAMS_16384
from privinfer.he.ops import ClientRows, HeOps, HeTensor
from privinfer.he.session import HeClient, LocalKeyHolder


class SpyHolder(LocalKeyHolder):
    """The client, keeping the delivered ciphertexts it decrypts."""

    def __init__(self, client):
        super().__init__(client)
        self.delivered = []

    def reveal(self, meta, payload):
        self.delivered = wire.unpack_ciphertexts(self.client.ctx, payload)
        return super().reveal(meta, payload)


@pytest.fixture(scope="module")
def holder():
    return SpyHolder(HeClient.create(PARAMS_16384))


def _deliver_weighted(holder, w, circuit_privacy, sigma=None):
    """Server: y = x * w on an all-zero upload, delivered; client: (E, Y, the delivered ct)."""
    ops = HeOps(keyholder=holder, circuit_privacy=circuit_privacy)
    if sigma is not None:
        ops.flood_sigma = sigma
    x = ops._enc(ClientRows(16, 0, torch.zeros(16, 8)))
    y = ops.ctx.multiply_values(x.cts[0], float(w))
    out = ops.reveal(HeTensor([y], 16, 512, 16))  # every slot valid: nothing masked
    if sigma is None:
        assert float(out.abs().max()) < 1e-3  # every output value is 0, whatever w
    holder.last_output = out
    ctx = holder.client.ctx
    ct = holder.delivered[0]
    return ctx.decrypt_complex(x.cts[0]), ctx.decrypt_complex(ct), ct, ops


def _estimate(e, y):
    return float(np.real(np.vdot(e, y)) / np.vdot(e, e).real)


def test_without_circuit_privacy_the_noise_reveals_the_weight(holder):
    for w in (1.0, 3.0):
        e, y, _, _ = _deliver_weighted(holder, w, circuit_privacy=False)
        assert abs(_estimate(e, y) - w) < 0.05


def test_default_flood_adds_its_stated_error_and_only_smudges_the_leak(holder):
    """The default flood (sized to the outputs' precision) adds FLOOD_SLOT_STD per slot and
    moves the delivery to level 0, but the weight is still read: it does not reach 40 bits
    (`privacy.figures` says 0 bits; this test pins that limit)."""
    e, y, ct, ops = _deliver_weighted(holder, 3.0, circuit_privacy=True)
    assert ops.ctx.level(ct) == 0
    measured = float(np.std(y.real))
    assert abs(measured / privacy.FLOOD_SLOT_STD - 1) < 0.05, measured
    spread = privacy.FLOOD_SLOT_STD / math.sqrt(np.vdot(e, e).real)  # estimate's std
    est = _estimate(e, y)
    # Uploads are secret-key encryptions (fresh noise ~3.2 per coefficient, smaller than a
    # public-key encryption's), so E is small and one delivery reads w with spread ~0.87:
    # w = 1 and w = 3 are ~2.3 spreads apart, far from hidden (0 bits statistically).
    assert abs(est - 3.0) < 8 * spread and spread < 1.0


def test_a_flood_sized_to_40_bits_hides_the_weight(holder):
    """sigma = 2^39 ||E_y(w=3) - E_y(w=1)||: the distance bound is 2^-40, and the attacker's
    log-likelihood ratio between w = 1 and w = 3 on what it sees is below 2^-30."""
    e, y1, _, _ = _deliver_weighted(holder, 1.0, circuit_privacy=False)
    # coefficient norm of the noise difference 2E: slots -> coefficients is sqrt(2 / N) in norm
    gap = 2.0 * math.sqrt(2 * np.vdot(e, e).real / PARAMS_16384.poly_modulus_degree)
    sigma = 2.0**39 * gap * 2.0**PARAMS_16384.scale_bits
    assert privacy.distance_bound(gap * 2.0**PARAMS_16384.scale_bits, 1, sigma) <= 2.0**-40
    for w in (1.0, 3.0):
        _, y, ct, ops = _deliver_weighted(holder, w, circuit_privacy=True, sigma=sigma)
        spread = privacy.slot_std(ops.ctx.params, sigma) / math.sqrt(np.vdot(e, e).real)
        est = _estimate(e, y)
        assert abs(est - w) < 8 * spread  # the estimate is as the flood alone predicts
        llr = abs((est - 1.0) ** 2 - (est - 3.0) ** 2) / (2 * spread**2)
        assert llr < 2.0**-30
        # ... and the outputs are destroyed: errors ~2^28 per slot, as `privacy.figures` says
        assert float(ops.keyholder.last_output.abs().max()) > 1e6


def test_rerandomised_c1_is_fresh(holder):
    """Same server computation, two deliveries: without circuit privacy the ciphertexts are
    identical (c1 a function of the circuit), with it they share nothing."""
    ops = HeOps(keyholder=holder, circuit_privacy=False)
    x = ops._enc(ClientRows(16, 0, torch.zeros(16, 8)))
    y = ops.ctx.multiply_values(x.cts[0], 2.0)
    blobs = []
    for flag in (False, False, True, True):
        ops.circuit_privacy = flag
        ops.reveal(HeTensor([y], 16, 8, 16))
        blobs.append(holder.client.ctx.ciphertext_to_bytes(holder.delivered[0]))
    assert blobs[0] == blobs[1] and blobs[2] != blobs[3]


def test_only_the_valid_slots_carry_values(holder):
    """Slots outside the output's rows and columns (earlier positions' logits, padded rows)
    are zeroed before delivery: what is left there is below the flood."""
    ops = HeOps(keyholder=holder, circuit_privacy=False)
    full = torch.arange(16 * 8, dtype=torch.float64).reshape(16, 8) / 10
    x = ops._enc(ClientRows(16, 0, full))
    last = HeTensor(x.cts, 1, 4, 16, 15)  # the last row's first 4 columns
    for flag in (False, True):
        ops.circuit_privacy = flag
        out = ops.reveal(last)
        assert torch.allclose(out.double(), full[15:, :4], atol=1e-3)
        z = holder.client.ctx.decrypt(holder.delivered[0])
        valid = ops._valid(last, 0) > 0
        others = np.abs(z[~valid]).max()
        assert (others > 1.0) if not flag else (others < 10 * privacy.FLOOD_SLOT_STD), others


def test_figures_state_the_counts_and_the_bound():
    f = privacy.figures(PARAMS_16384)
    assert f["delivered_ciphertexts"]["minilm_sentence"] == 2
    assert f["delivered_ciphertexts"]["smollm2_token_context_16"] == 6 * 16 + 1
    assert f["statistical_security_bits_per_ciphertext"] == 0.0
    assert f["sigma_for_40_bits_per_session"]["minilm_sentence"]["sigma_log2"] > 50
