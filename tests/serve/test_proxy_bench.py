"""`privinfer bench proxy`'s two measurements on the plain proxy: one token chunk per token
through the openai client, the same tokens' times from a direct call; its README rows."""

from __future__ import annotations

from privinfer.bench import proxy_bench


def test_proxy_and_direct_time_the_same_tokens(plain_proxy, smollm):
    via = proxy_bench.through_proxy(plain_proxy.url, 5)
    assert via["ttft_s"] > 0 and len(via["token_s"]) == 4 and all(t > 0 for t in via["token_s"])
    assert len(via["mode_token_s"]) == 4  # the proxy's own per-token figures, token 2 on
    direct = proxy_bench.direct(smollm, "plain", 5)
    assert len(direct["token_s"]) == 4 and direct["ttft_s"] > 0


def test_rows_name_every_mode_and_say_what_is_missing():
    per = {"direct_per_token_s_median": 0.1, "proxy_per_token_s_median": 0.102,
           "ratio_proxy_over_direct": 1.02}  # fmt: skip
    r = {"threads": 1, "runs": 3, "decode_steps": 8, "prompt_tokens": 25,
         "overhead": {"plain": per, "tee": per},
         "ttft_s": {"plain": {"median": 0.3}, "tee": {"median": 0.6}, "mpc": {"median": 14.2}}}  # fmt: skip
    rows = proxy_bench.rows(r)
    assert [row[3] for row in rows[:2]] == ["1.020x", "1.020x"]
    assert rows[2][1] == "plain 300 ms, tee 600 ms, mpc 14.2 s"
    assert "he not measured" in rows[2][4]
