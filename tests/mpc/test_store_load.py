"""A party's share store, loaded: the shares live in the party's own memory (not a mapping of
the store's files, which the kernel may drop and read again at every step: the CLI's slowness in
issue 17), still reconstruct the weights, are refused when tampered with, and serve several
sessions on the same objects with the same greedy tokens as plain."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from tests.mpc.helpers import KEYS

import privinfer
from privinfer.models.generate import GenerationStats, generate_ids
from privinfer.models.ops import Sampler
from privinfer.models.tiny import tiny_llama_config, tiny_llama_weights, write_hf_folder
from privinfer.mpc.client import LocalClient
from privinfer.mpc.ops import MpcOps
from privinfer.mpc.prf import KeyStream
from privinfer.mpc.ring import encode
from privinfer.mpc.runtime import run_local
from privinfer.mpc.store import PartyStore, ShareStoreError, prepared_weights, share_model

PROMPT = [256, 72, 105, 33, 10]


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("store")
    cfg = tiny_llama_config()
    lm = privinfer.load(str(write_hf_folder(tmp / "model", cfg, tiny_llama_weights(cfg, 7))))
    share_model(lm, "tiny", tmp / "stores")
    return lm, tmp / "stores"


def _reconstruct(loaded: list[PartyStore], name: str) -> torch.Tensor:
    return sum(s.share(i, 16, name).a for i, s in enumerate(loaded))  # x0 + x1 + x2


def test_loaded_shares_do_not_depend_on_the_files_after_load(stores):
    lm, folder = stores
    loaded = [PartyStore(folder / f"party-{i}", i) for i in range(3)]
    for i in (1, 2):  # overwrite every stored component once loaded: a mapping would follow
        for f in (folder / f"party-{i}").glob("w*.bin"):
            f.write_bytes(bytes(f.stat().st_size))
    for name, kind, w in prepared_weights(lm):
        want = encode(w.double().T.contiguous() if kind == "linear" else w.double(), 16)
        assert torch.equal(_reconstruct(loaded, name), want), name
    with pytest.raises(ShareStoreError, match="does not match its manifest"):
        PartyStore(folder / "party-1", 1)  # the zeroed files are refused at the next load


def test_big_key_stream_draws_equal_one_aes_ctr_pass():
    key = bytes(range(32))
    for shape in [(5,), (600_001,), (3, 400_000)]:
        n = int(np.prod(shape))
        enc = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor()
        raw = enc.update(bytes(8 * n)) + enc.finalize()
        want = torch.from_numpy(np.frombuffer(raw, dtype=np.int64).copy()).reshape(shape)
        assert torch.equal(KeyStream(key).draw(shape), want)


def test_two_sessions_on_one_store_reuse_the_weights_and_match_plain(tmp_path):
    cfg = tiny_llama_config()
    lm = privinfer.load(str(write_hf_folder(tmp_path / "m", cfg, tiny_llama_weights(cfg, 5))))
    share_model(lm, "tiny", tmp_path / "s")
    loaded = [PartyStore(tmp_path / "s" / f"party-{i}", i) for i in range(3)]
    plain = lm.plain()
    want = list(
        generate_ids(
            plain, PROMPT, sampler=Sampler(), max_new_tokens=3, stop_ids=[], stats=GenerationStats()
        )
    )

    clients = [LocalClient(16), LocalClient(16)]  # one per session, shared by the 3 parties

    def program(p):
        store, runs = loaded[p.pid], []
        for client in clients:  # two sessions, one store: the linears are concatenated once
            ops = MpcOps(p, client)
            ops.weight_store = store
            model = store.family.build(store.build_config(), store.placeholders(), ops)
            runs.append(
                list(
                    generate_ids(
                        model,
                        PROMPT,
                        sampler=Sampler(),
                        max_new_tokens=3,
                        stop_ids=[],
                        stats=GenerationStats(),
                    )
                )
            )
            runs.append(len(store.concat_cache))
        return runs

    out = run_local(program, keys=KEYS, timeout_s=60)
    first, n_cat, second, n_cat2 = out[0]
    assert first == want and second == want
    assert n_cat > 0 and n_cat2 == n_cat  # the second session added no concatenation
