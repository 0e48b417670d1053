"""A real two-process run: `privinfer he serve` in a subprocess, the client here, over TLS."""

import privinfer
from privinfer.models.tiny import tiny_llama_config, tiny_llama_weights, write_hf_folder


def test_generate_he_with_server_subprocess_matches_plain(tmp_path):
    cfg = tiny_llama_config()
    folder = write_hf_folder(tmp_path / "tiny", cfg, tiny_llama_weights(cfg, seed=3))
    lm = privinfer.load(str(folder))
    plain = lm.generate("Hi", chat=False, max_new_tokens=1)
    he = lm.generate("Hi", chat=False, max_new_tokens=1, mode="he")
    assert he.token_ids == plain.token_ids
    assert he.stats.new_tokens == 1 and he.stats.prefill_s > 0
    from privinfer import modes_he

    assert modes_he.last_stats["rounds"] > 0 and modes_he.last_stats["bytes_to_server"] > 1e8
