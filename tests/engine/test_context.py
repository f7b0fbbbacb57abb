"""Context parallelism without engines: the one-line refusals, the chunks each rank holds, the
memory model's activations over the ranks, and the figure. (Its runs on engines, equal to
single and switched to from ddp, are in test_strategies.py and session/test_switching.py.)"""

from dataclasses import replace

import pytest

from parakit.advisor.costs import estimate
from parakit.advisor.calibrate import engines_hardware
from parakit.advisor.inputs import Calibration
from parakit.config.formulas import ring_bytes_per_step
from parakit.config.memory_model import memory_per_rank
from parakit.config.run import RunConfig
from parakit.engine.shape import model_shape
from parakit.engine.strategies.ring import chunk_positions, plan
from parakit.plots import runs as plots
from parakit.records.result import OK, RunResult
from parakit.records.summary_fields import Summary

GPT = dict(model="gpt", model_options={"seq_len": 32, "width": 64, "heads": 4})


@pytest.mark.parametrize("settings, message", [
    (dict(model="mlp"), r"ring attention, which parakit can do in the built-in gpt only \(got mlp\); use model='gpt'"),
    (dict(model="gpt", model_options={"seq_len": 30}),
     r"context over 2 ranks cuts each sequence into 4 chunks \(two per rank\); seq_len 30 is not a multiple of 4"),
    (dict(**GPT, compile=True), r"compile does not combine with context yet"),
    (dict(**GPT, compression="fp16"), r"compression fp16 does not apply to context"),
    (dict(**GPT, bucket_mb=5), r"bucket_mb sizes DDP's gradient buckets; strategy context has none"),
])
def test_context_refuses_what_it_cannot_split_in_one_line(settings, message):
    with pytest.raises(ValueError, match=message) as caught:
        RunConfig(strategy="context", workers=2, **settings)
    assert "\n" not in str(caught.value)


def test_each_rank_holds_an_early_and_a_late_chunk_and_every_ring_step_is_the_same_work():
    # 16 tokens over 4 ranks: 8 chunks of 2; rank 0 holds the first and the last
    assert [chunk_positions(16, r, 4).tolist() for r in range(4)] == [
        [0, 1, 14, 15], [2, 3, 12, 13], [4, 5, 10, 11], [6, 7, 8, 9]]
    assert sorted(sum((chunk_positions(16, r, 4).tolist() for r in range(4)), [])) == list(range(16))
    for rank in range(4):
        steps = list(plan(rank, 4, local=4))
        assert steps[0] == (slice(None), slice(None), True)  # its own keys, causal
        # after that, half the queries against all the keys or all the queries against half:
        # one c x 2c block on every rank at every step, so no rank waits on another's work
        for queries, keys, causal in steps[1:]:
            assert not causal and (queries == slice(None)) != (keys == slice(None))


def test_the_memory_model_divides_activations_by_the_context_ranks():
    shape = model_shape(RunConfig(strategy="single", batch_size=8, **GPT))
    single = memory_per_rank(RunConfig(strategy="single", batch_size=8, **GPT), shape, 0)
    for ranks in (2, 4):
        context = memory_per_rank(RunConfig(strategy="context", workers=ranks, batch_size=8, **GPT), shape, 0)
        assert context["activations"] == pytest.approx(single["activations"] / ranks)
        assert context["params"] == single["params"]  # a whole replica on each rank
        assert context["buffers"] == single["params"]  # the flat fp32 buffer its gradients are averaged in


def test_the_advisor_predicts_the_rings_bytes_and_half_the_compute_on_two_ranks():
    link = {"alpha_s": 1e-4, "beta_bytes_per_s": 1e9}
    cal = Calibration(device="cpu", device_name="test cpu", engine_count=2, threads_per_rank=1, batch_size=8,
                      pass_fixed_s=0.0, per_row_s=1e-3, step_fixed_s=0.0, single_step_s={"fp32": 0.008},
                      collectives={"all_reduce": link, "send_recv": link}, memory_bytes=2**33)
    base = dict(batch_size=8, **GPT)
    shape = model_shape(RunConfig(strategy="single", **base))
    hw = engines_hardware(cal, cores=2)
    single = estimate(RunConfig(strategy="single", **base), shape, cal, hw, {"strategy": "single"})
    context = estimate(RunConfig(strategy="context", workers=2, **base), shape, cal, hw, {"strategy": "context"})
    ring = ring_bytes_per_step(batch_size=8, seq_len=32, width=64, depth=2, ranks=2)
    assert context.collective_bytes_per_step == ring + shape.params * 4  # the ring, then the gradients' all-reduce
    assert context.compute_time_s == pytest.approx(single.compute_time_s / 2, rel=0.1)
    assert context.exposed_comm_time_s > 0 and context.fits


def _run(run_id, strategy, workers, seq_len, **figures):
    config = {"model": "gpt", "model_options": {"seq_len": seq_len}, "strategy": strategy, "workers": workers}
    run = RunResult(run_id=run_id, status=OK, config=config, world_size=workers, backend="gloo",
                    device_names=["cpu"] * workers, ranks=[])
    run.summary = replace(Summary(step_time_s=0.1, samples_per_s=10.0), **figures)
    return run


def test_the_context_figure_draws_ring_bytes_exposed_comm_and_activations_against_sequence_length():
    runs = [_run("c2", "context", 2, 64, ring_bytes_per_step=2 * 2**20, comm_time_s=0.004, exposed_comm_time_s=0.001,
                 activation_bytes=4 * 2**20, context_path="ring (point-to-point)"),
            _run("c1", "context", 2, 32, ring_bytes_per_step=2**20, comm_time_s=0.002, exposed_comm_time_s=None,
                 activation_bytes=2 * 2**20, context_path="ring (point-to-point)"),
            _run("d", "ddp", 2, 64, activation_bytes=8 * 2**20),
            _run("m", "ddp", 2, 64)]
    runs[3].config["model"] = "mlp"
    fig = plots.PLOTS["context"](runs)
    lines = {(t.name, t.xaxis or "x"): (list(t.x), list(t.y)) for t in fig.data}
    assert lines[("context x2", "x")] == ([32, 64], [1.0, 2.0])  # in sequence order, MiB
    assert lines[("context x2 · exposed", "x2")] == ([64], [1.0])  # the unmeasured one left out, not 0
    assert lines[("context x2", "x3")] == ([32, 64], [2.0, 4.0])
    assert lines[("ddp x2", "x3")] == ([64], [8.0])
    assert "1 run skipped (failed, stopped or not the gpt)" in fig.layout.title.subtitle.text
