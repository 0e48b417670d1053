from privinfer.he import bench


def test_bench_functions_report_medians_and_errors():
    mv = bench.bench_matvec(n=64, repeats=1)
    assert mv["median_s"] > 0 and mv["max_abs_error"] < 1e-3 and mv["rotations"] <= 16
    pk = bench.bench_packed(vectors=8, n=32, repeats=1)
    assert pk["median_per_vector_s"] > 0 and pk["max_abs_error"] < 1e-3
