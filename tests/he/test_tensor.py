import numpy as np
import pytest
import torch

from privinfer.errors import InputError, SecurityError
from privinfer.he.ckks import CkksContext
from privinfer.he.refresh import LocalRefreshClient, Refresher
from privinfer.he.tensor import EncryptedTensor


@pytest.fixture
def refresher8192(client8192):
    return Refresher(client8192, LocalRefreshClient(client8192))


def test_vector_mlp_with_refresh_matches_numpy(client8192, refresher8192, rng):
    c = client8192
    x = rng.normal(size=24)
    w1, b1 = rng.normal(size=(48, 24)) / 5, rng.normal(size=48)
    w2, w3 = rng.normal(size=(12, 48)) / 7, rng.normal(size=(12, 12)) / 4
    e = EncryptedTensor.encrypt(c, torch.tensor(x), refresher=refresher8192)
    y = e.linear(w1, b1).linear(w2).linear(torch.tensor(w3))  # 3 levels: forces a refresh
    assert refresher8192.stats.rounds >= 1
    assert np.abs(y.decrypt(c) - w3 @ (w2 @ (w1 @ x + b1))).max() < 2e-3


def test_without_refresher_running_out_of_levels_is_a_clear_error(client8192, rng):
    e = EncryptedTensor.encrypt(client8192, rng.normal(size=8))
    e = e.linear(np.eye(8)).linear(np.eye(8))
    with pytest.raises(InputError, match="attach a Refresher"):
        e.linear(np.eye(8))


def test_elementwise_and_public_operands(client8192, rng):
    c = client8192
    x, y = rng.normal(size=10), rng.normal(size=10)
    a, b = EncryptedTensor.encrypt(c, x), EncryptedTensor.encrypt(c, y)
    out = (a * b + 1.0 - a) * np.arange(10.0)
    assert np.abs(out.decrypt(c) - (x * y + 1 - x) * np.arange(10)).max() < 1e-3


def test_token_matrix_linear_and_matmul(client8192, rng):
    c = client8192
    x = rng.normal(size=(5, 24))
    w, b = rng.normal(size=(40, 24)) / 5, rng.normal(size=40)
    e = EncryptedTensor.encrypt(c, x)
    assert np.abs(e.linear(w, b).decrypt(c) - (x @ w.T + b)).max() < 2e-3
    m = rng.normal(size=(24, 7)) / 5
    assert np.abs(e.matmul(m).decrypt(c) - x @ m).max() < 2e-3


def test_conv1d_matches_torch(client8192, rng):
    c = client8192
    sig, w, bias = rng.normal(size=(2, 16)), rng.normal(size=(3, 2, 3)), rng.normal(size=3)
    e = EncryptedTensor.encrypt(c, sig.ravel())
    out = e.conv1d(w, bias, in_channels=2, padding=1).decrypt(c)
    ref = torch.nn.functional.conv1d(
        torch.tensor(sig)[None], torch.tensor(w), torch.tensor(bias), padding=1
    )
    assert np.abs(out - ref.numpy().ravel()).max() < 2e-3


def test_conv2d_matches_torch(client8192, rng):
    c = client8192
    img, w = rng.normal(size=(2, 6, 6)), rng.normal(size=(2, 2, 3, 3)) / 3
    e = EncryptedTensor.encrypt(c, img.ravel())
    out = e.conv2d(w, None, image=(2, 6, 6)).decrypt(c)
    ref = torch.nn.functional.conv2d(torch.tensor(img)[None], torch.tensor(w))
    assert np.abs(out - ref.numpy().ravel()).max() < 2e-3


def test_activation_after_linear_on_16384(client16384, rng):
    c = client16384
    refresher = Refresher(c, LocalRefreshClient(c))
    x = rng.uniform(-2, 2, size=(4, 16))
    w = rng.normal(size=(16, 16)) / 4
    e = EncryptedTensor.encrypt(c, x, refresher=refresher)
    h = e.linear(w).gelu()  # 1 + 7 levels: fits the 9-level window
    from privinfer.he.poly import GELU

    assert np.abs(h.decrypt(c) - GELU(x @ w.T)).max() < 2e-3


def test_server_side_tensor_without_secret_key(client8192, rng):
    server = CkksContext.from_public(client8192.export_public())
    x = rng.normal(size=8)
    enc = EncryptedTensor.encrypt(client8192, x)
    remote = EncryptedTensor(
        server,
        [server.ciphertext_from_bytes(client8192.ciphertext_to_bytes(enc.cts[0]))],
        enc.shape,
        cover=enc.cover,
        period=enc.period,
    )
    out = remote * 2.0 + 1.0
    with pytest.raises(SecurityError):
        out.decrypt(server)
    assert np.abs(client8192.decrypt(out.cts[0])[:8] - (2 * x + 1)).max() < 1e-3
