from privinfer.bench import he_bench as bench


def test_bench_functions_report_medians_and_errors():
    mv = bench.bench_matvec(n=64, repeats=1)
    assert mv["median_s"] > 0 and mv["max_abs_error"] < 1e-3 and mv["rotations"] <= 16
    pk = bench.bench_packed(vectors=8, n=32, repeats=1)
    assert pk["median_per_vector_s"] > 0 and pk["max_abs_error"] < 1e-3


def test_ranking_metrics_count_swaps_and_neighbours():
    import torch

    from privinfer.bench.he_bench import _ranking

    plain = torch.nn.functional.normalize(
        torch.randn(6, 8, generator=torch.Generator().manual_seed(0)), dim=1
    )
    same = _ranking(plain.clone(), plain)
    assert same["pair_ranking_equal"] and same["discordant_comparisons"] == 0
    assert same["kendall_tau"] == 1.0 and same["nearest_neighbour_equal"] == 6
    assert same["per_sentence_ranking_equal"] == 6 and same["pairs"] == 15
    noisy = _ranking(
        plain + 0.2 * torch.randn(6, 8, generator=torch.Generator().manual_seed(1)), plain
    )
    assert not noisy["pair_ranking_equal"] and noisy["discordant_comparisons"] > 0
    assert 0 < noisy["max_plain_gap_of_discordant"] and noisy["kendall_tau"] < 1.0
