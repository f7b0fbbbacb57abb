"""The communication benchmark: the latency/bandwidth fit and a real 2-rank gloo run on CPU (one
spawn for the module). The nccl-tests bandwidth factors are tested in test_formulas.py."""

import json
import math

import pytest

from parakit.cluster.placement import visible_gpus
from parakit.config.formulas import bus_factor
from parakit.engine import commbench
from parakit.engine.commbench import fit_alpha_beta, run_comm_bench
from parakit.records.commbench import CollectiveFit, CommBenchFigures, CommBenchRow
from dist_helpers import comm_bench, run_ranks

KB, MB = 1024, 1024 * 1024
SMALL_SIZES = [KB * 4**k for k in range(6)]  # 1 KB .. 1 MB
ON_GLOO_CPU = ["all_reduce", "all_gather", "broadcast", "send_recv"]  # reduce_scatter: skipped


def test_fit_recovers_exact_latency_and_bandwidth():
    alpha, beta = 1e-5, 1e9
    points = [(b, alpha + b / beta) for b in SMALL_SIZES + [256 * MB]]
    fitted_alpha, fitted_beta, reason = fit_alpha_beta(points)
    assert reason is None
    assert fitted_alpha == pytest.approx(alpha, rel=1e-6)
    assert fitted_beta == pytest.approx(beta, rel=1e-6)


def test_fit_refuses_a_negative_latency():
    points = [(1000, 1e-6), (2000, 3e-6), (3000, 5e-6)]  # exactly t = -1e-6 + 2e-9 * bytes
    assert fit_alpha_beta(points) == (
        None, None, "fit gave a negative latency: times are dominated by noise")


@pytest.mark.parametrize("points, words", [
    ([(KB, 1e-5), (KB, 2e-5)], "at least 2 message sizes"),
    ([(KB, 2e-5), (MB, 1e-5)], "no positive bandwidth"),
    ([(KB, 0.0), (MB, 1e-3)], "not positive"),
])
def test_fit_says_why_it_cannot_fit(points, words):
    alpha, beta, reason = fit_alpha_beta(points)
    assert alpha is None and beta is None and words in reason


def _no_communication(monkeypatch):
    """A fake 1-rank group whose every collective fails the test if called."""
    monkeypatch.setattr(commbench.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(commbench.dist, "get_world_size", lambda: 1)
    monkeypatch.setattr(commbench.dist, "get_rank", lambda: 0)
    for name in ("barrier", "all_reduce", "broadcast", "send", "recv"):
        monkeypatch.setattr(commbench.dist, name, lambda *a, **k: pytest.fail("communicated"))


def test_one_worker_is_refused_before_any_communication(monkeypatch):
    _no_communication(monkeypatch)
    with pytest.raises(ValueError, match="^the communication benchmark needs at least 2 workers$"):
        run_comm_bench(sizes_bytes=[KB])


@pytest.mark.parametrize("kwargs, words", [
    (dict(collectives=["all_reduce", "allgather"]), "unknown collective 'allgather': choose from"),
    (dict(sizes_bytes=[KB, 0]), "positive whole numbers"),
    (dict(sizes_bytes=[KB, MB], max_bytes=512), "no message size is at most max_bytes=512"),
    (dict(repeats=0), "repeats must be >= 1"),
    (dict(dtype="float64"), "dtype must be one of float32, float16, bfloat16"),
])
def test_bad_arguments_are_refused_before_any_communication(monkeypatch, kwargs, words):
    _no_communication(monkeypatch)
    with pytest.raises(ValueError, match=words):
        run_comm_bench(**kwargs)


@pytest.fixture(scope="module")
def two_ranks():
    # 3 MB of max_bytes leaves out a size above it: the caller's cap is applied.
    options = dict(sizes_bytes=SMALL_SIZES + [4 * MB], max_bytes=3 * MB, repeats=3, warmup=2,
                   device="cpu")
    return run_ranks(comm_bench, options)


def test_two_ranks_measure_every_collective_at_every_size(two_ranks):
    result = two_ranks[0]["result"]
    assert isinstance(result, CommBenchFigures)  # read by attribute, not by key
    assert (result.world_size, result.backend, result.device, result.dtype) == (2, "gloo", "cpu", "float32")
    assert [(r.collective, r.bytes) for r in result.rows] == [(c, b) for c in ON_GLOO_CPU for b in SMALL_SIZES]
    for row in result.rows:
        assert isinstance(row, CommBenchRow)
        assert 0 < row.time_min_s <= row.time_s <= row.time_max_s
        assert row.algbw_gbps == pytest.approx(row.bytes / row.time_s / 1e9)
        assert row.busbw_gbps == pytest.approx(row.algbw_gbps * bus_factor(row.collective, 2))
        assert (row.repeats, row.warmup) == (3, 2)


def test_the_figures_turn_into_the_json_the_store_keeps(two_ranks):
    result = two_ranks[0]["result"]
    stored = json.loads(json.dumps(result.to_dict()))  # what CommBenchResult keeps: plain data
    assert [CommBenchRow(**row) for row in stored["rows"]] == result.rows
    assert (stored["rows"][0]["collective"], stored["rows"][0]["bytes"]) == ("all_reduce", KB)
    assert set(stored["fits"]) == set(ON_GLOO_CPU) and set(stored["fits"]["all_reduce"]) == {
        "alpha_s", "beta_bytes_per_s", "reason"}
    assert stored["skipped"] == result.skipped and stored["world_size"] == 2


def test_gloo_reduce_scatter_is_skipped_because_gloo_runs_it_as_an_all_reduce(two_ranks):
    assert two_ranks[0]["result"].skipped == {
        "reduce_scatter": commbench.CANNOT_MEASURE["gloo", "cpu", "reduce_scatter"]}
    assert "all_reduce" in two_ranks[0]["result"].skipped["reduce_scatter"]


def test_ranks_return_the_same_numbers(two_ranks):
    assert two_ranks[0]["result"] == two_ranks[1]["result"]


def test_bandwidth_grows_with_message_size(two_ranks):
    algbw = {(r.collective, r.bytes): r.algbw_gbps for r in two_ranks[0]["result"].rows}
    for collective in ON_GLOO_CPU:  # 1024x the bytes in a few times the time
        assert algbw[collective, MB] > algbw[collective, KB], collective


def test_fit_gives_latency_and_bandwidth_or_a_reason(two_ranks):
    fits = two_ranks[0]["result"].fits
    assert set(fits) == set(ON_GLOO_CPU)
    for fit in fits.values():
        assert isinstance(fit, CollectiveFit)
        if fit.reason is None:
            assert 0 < fit.alpha_s < 1 and 0 < fit.beta_bytes_per_s < math.inf
        else:
            assert fit.alpha_s is None and fit.beta_bytes_per_s is None


def test_progress_counts_every_collective_and_size(two_ranks):
    for rank in two_ranks:
        progress = rank["progress"]
        total = len(ON_GLOO_CPU) * len(SMALL_SIZES)
        assert [p["done"] for p in progress] == list(range(1, total + 1))
        assert {p["total"] for p in progress} == {total}
        assert [(p["collective"], p["bytes"]) for p in progress] == [
            (r.collective, r.bytes) for r in rank["result"].rows]


@pytest.mark.gpu
@pytest.mark.skipif(not visible_gpus()[0], reason="needs a CUDA GPU: " + str(visible_gpus()[1]))
def test_cuda_buffers_are_timed_with_events_and_gloo_skips_what_it_cannot_measure():
    # Two ranks on one GPU share it through gloo, as parakit does when engines outnumber GPUs.
    ranks = run_ranks(comm_bench, dict(sizes_bytes=[KB, MB], repeats=3, warmup=1), timeout_s=120)
    result = ranks[0]["result"]
    assert (result.device, result.backend) == ("cuda:0", "gloo")
    assert result == ranks[1]["result"]
    assert set(result.skipped) == {"reduce_scatter", "send_recv"}
    algbw = {(r.collective, r.bytes): r.algbw_gbps for r in result.rows}
    for collective in ("all_reduce", "all_gather", "broadcast"):
        assert algbw[collective, MB] > algbw[collective, KB] > 0, collective
