"""The time breakdown: the interval arithmetic on a synthetic trace, then real ddp runs on 2
CPU engines, where it must account for the measured step time and show overlap."""

from __future__ import annotations

import statistics
from types import SimpleNamespace

import pytest

from parakit.engine.breakdown import STEP_EVENT, WINDOW_STEPS, breakdown, recorded_steps


def event(name, start_us, end_us, thread=1, device_type=None):
    return SimpleNamespace(name=name, time_range=SimpleNamespace(start=start_us, end=end_us),
                           thread=thread, device_type=device_type)


def test_cpu_breakdown_from_a_synthetic_trace():
    # A 100 us step: compute 0-40 and 50-70 on the training thread; gloo runs 30-60 and 65-90
    # on its own thread; nothing 90-100.
    events = [
        event(STEP_EVENT, 0, 100),
        event("aten::addmm", 0, 40), event("autograd::engine::evaluate_function: AddmmBackward0", 50, 70),
        event("aten::mm", 52, 60),  # nested inside the backward function: counted once
        event("gloo:all_reduce", 30, 60, thread=2), event("gloo:all_reduce", 65, 90, thread=3),
        event("c10d::allreduce_", 40, 41),  # enqueueing a collective is not compute
        event("aten::add", 95, 120, thread=7),  # another thread's operator: not this rank's compute
    ]
    got = breakdown(events, cuda=False)
    assert got["compute_time_s"] == pytest.approx(60e-6)
    assert got["comm_time_s"] == pytest.approx(55e-6)  # 30-60 and 65-90
    assert got["exposed_comm_time_s"] == pytest.approx(30e-6)  # 40-50 and 70-90
    assert got["idle_time_s"] == pytest.approx(10e-6)  # 90-100
    assert got["compute_time_s"] + got["exposed_comm_time_s"] + got["idle_time_s"] == pytest.approx(100e-6)


def test_gpu_breakdown_uses_kernels_and_nccl_kernels():
    cuda = "DeviceType.CUDA"
    events = [
        event(STEP_EVENT, 0, 100),
        event("aten::mm", 0, 5),  # the CPU side of a GPU op launches; the kernel is what computes
        event("sm90_xmma_gemm", 10, 50, thread=0, device_type=cuda),
        event("ncclDevKernel_AllReduce_Sum_f32_RING_LL", 40, 80, thread=0, device_type=cuda),
    ]
    got = breakdown(events, cuda=True)
    assert got["compute_time_s"] == pytest.approx(40e-6)
    assert got["comm_time_s"] == pytest.approx(40e-6)
    assert got["exposed_comm_time_s"] == pytest.approx(30e-6)
    assert got["idle_time_s"] == pytest.approx(30e-6)  # 0-10 and 80-100: the GPU did nothing


def test_which_steps_are_recorded():
    assert recorded_steps(12, warmup=2, every=5) == [2, 7]
    assert recorded_steps(12, warmup=2, every=0) == []
    # the default: one window, the last measured steps, never a warm-up step
    assert recorded_steps(12, warmup=2, every=None) == [12 - WINDOW_STEPS + i for i in range(WINDOW_STEPS)]
    assert recorded_steps(4, warmup=2, every=None) == [2, 3]


# -- real runs -------------------------------------------------------------------------------
BIG = {"model": "mlp", "model_options": {"width": 512, "depth": 8}, "workers": 2, "batch_size": 32}


def test_ddp_breakdown_accounts_for_the_step_time(session):
    r = session.run(strategy="ddp", steps=12, warmup_steps=2, profile_every=2, **BIG)
    assert r.ok, r.error
    s = r.summary
    assert s["breakdown_steps"] == 5  # steps 2, 4, 6, 8, 10
    recorded = [st for st in r.steps if st.rank_compute_time_s is not None]
    assert [st.step for st in recorded] == [2, 4, 6, 8, 10]
    ratios = []
    for st in recorded:
        for c, m, e, i, t in zip(st.rank_compute_time_s, st.rank_comm_time_s, st.rank_exposed_comm_time_s,
                                 st.rank_idle_time_s, st.rank_step_time_s):
            assert c > 0 and m > 0 and 0 <= e <= m + 1e-9 and i >= 0
            ratios.append((c + e + i) / t)  # the profiler's step vs the timer's
    # The profiler's step wraps the timer's, so it is never shorter. It is longer by what lies
    # between the two (~0.3% here); on 2 shared cores a rank descheduled in that gap made one
    # step 1.33 once in CI, so single steps are bounded below and the typical step is checked.
    assert min(ratios) > 0.98, ratios
    assert statistics.median(ratios) == pytest.approx(1, abs=0.05), ratios
    assert s["breakdown_check"] == pytest.approx(1, abs=0.10)
    assert s["comm_time_s"] > 0 and s["profiler_overhead"] is not None
    assert "torch.profiler on 5 steps" in s["method"]["compute_time_s"]
    # the 5 recorded steps run slower: the step time is the median of the other 5
    assert "median over 5 of the 10 steps after 2 warm-up steps (the profiler's recorded steps left out" \
        in s["method"]["step_time_s"]
    assert s["timed_steps"] == 5


def test_small_buckets_hide_communication_behind_backward(session):
    """One bucket for all gradients can only be sent after backward ends, so all of its
    communication is exposed; 1 MB buckets go as soon as their layers' gradients are ready,
    while backward goes on. On 2 shared cores the communication then competes with backward
    for the same cores and takes longer, so the share that is exposed is what falls, reliably;
    the absolute exposed time falls on machines with cores (or a GPU) to spare."""
    deep = {**BIG, "model_options": {"width": 512, "depth": 16}}  # 16 MB of gradients: the 1 MB first
    share = {}                                                      # bucket is a small part of "one bucket"
    for mb in (100, 1):
        r = session.run(strategy="ddp", steps=10, warmup_steps=2, profile_every=1, bucket_mb=mb, **deep)
        assert r.ok, r.error
        share[mb] = statistics.median(
            sum(st.rank_exposed_comm_time_s) / sum(st.rank_comm_time_s) for st in r.steps if st.rank_comm_time_s
        )
    # (DDP caps its first bucket at 1 MB whatever bucket_mb says, so even "one bucket" hides a
    # little: the claim is the difference. With depth 8 (8 MB) the ratio ranged 0.54-0.84 over
    # four runs on the 2-core VM, one of them failing 0.8; with depth 16, 0.39-0.59 over three.)
    assert share[1] < 0.8 * share[100], share


def test_no_recorded_step_is_null_with_a_reason(session):
    r = session.run(strategy="ddp", workers=2, steps=3, batch_size=8, profile_every=0)
    assert r.ok, r.error
    assert r.summary["compute_time_s"] is None and r.summary["exposed_comm_time_s"] is None
    assert r.unmeasured["compute_time_s"] == "the profiler was off (profile_every=0)"
    assert all(st.rank_compute_time_s is None for st in r.steps)


def test_energy_is_measured_or_null_with_a_reason_never_zero(session):
    r = session.run(strategy="ddp", workers=2, steps=4, batch_size=8)
    assert r.ok, r.error
    assert [k.power_device for k in r.ranks][0].startswith("cpu@")
    if r.summary["energy_j"] is None:  # this machine: no RAPL counters readable
        assert "RAPL" in r.unmeasured["energy_j"] and r.summary["samples_per_j"] is None
    else:
        measured = 8 * r.summary["measured_steps"]  # the same steps as the throughput: warm-up left out
        assert r.summary["energy_j"] > 0 and r.summary["samples_per_j"] == pytest.approx(measured / r.summary["energy_j"])


# -- what looking costs, at the default settings ----------------------------------------------
SMALL = {"model": "mlp", "model_options": {"width": 64}, "strategy": "ddp", "workers": 2, "batch_size": 64}


def test_at_the_defaults_only_the_last_steps_are_recorded_and_nothing_else_touches_the_steps(session):
    """Counted, not timed: the profiler is on during the recorded window only (the last 3
    steps), its events are read after the measured steps' clock stops, and between the other
    steps only progress messages run. Reading events with prof.events() made ~1M objects per
    recorded step, whose collection slowed the following steps: the measured steps see no
    more cyclic-GC collections with the breakdown on than with it off."""
    steps = 40
    default, off = (session.run(steps=steps, **SMALL, **extra) for extra in ({}, {"profile_every": 0}))
    assert default.ok and off.ok, (default.error, off.error)
    seen, none = default.summary["instrument_overhead"], off.summary["instrument_overhead"]
    assert seen["profiler_on_steps"] == [steps - 3, steps - 2, steps - 1] and none["profiler_on_steps"] == []
    assert default.summary["breakdown_steps"] == 3 and seen["recorded_steps"] == 3
    wall_s = 64 * default.summary["measured_steps"] / default.summary["wall_samples_per_s"]
    assert seen["progress_messages"] <= wall_s / 0.2 + 2  # at most every 0.2 s, and the last step
    assert seen["gc_collections"][2] <= none["gc_collections"][2]  # no full collection the profiler caused
    assert seen["between_steps_s"] is not None and 0 <= seen["wall_share"] < 1
    assert "perf_counter" in seen["method"]


def test_wall_clock_throughput_covers_the_measured_steps_and_what_lies_between(session):
    r = session.run(steps=30, **SMALL)
    assert r.ok, r.error
    s = r.summary
    wall_s = 64 * s["measured_steps"] / s["wall_samples_per_s"]
    measured = [st for st in r.steps if not st.warmup]
    # The window holds every measured step of every rank, and the gaps between them.
    assert max(sum(st.rank_step_time_s[k] for st in measured) for k in range(2)) <= wall_s
    assert s["samples_per_s"] >= 0.5 * s["wall_samples_per_s"]  # same steps, median against wall
    assert "wall clock" in s["method"]["wall_samples_per_s"]


@pytest.mark.parametrize("strategy", ["ddp", "pipeline"])
def test_a_diverged_run_says_so_and_every_rank_stops_at_the_same_step(session, strategy):
    # lr=1e6: NaN within a few steps. A pipeline's first stage computes no loss: it learns of
    # the divergence from the last stage through the store, and must stop at the same step.
    r = session.run(steps=200, lr=1e6, **{**SMALL, "strategy": strategy})
    assert r.ok, r.error  # the run itself worked: status ok, with the warning
    at = r.summary["diverged_at_step"]
    assert at is not None and at < 10
    assert any(f"diverged at step {at}" in w for w in r.warnings)
    assert len(r.steps) < 40  # stopped soon after (checks every 8 steps, a margin of 2)
    from parakit.records.result import headline

    assert f"DIVERGED at step {at}" in headline(r)


def test_without_stop_on_divergence_the_run_goes_on_and_still_says_so(session):
    r = session.run(steps=24, lr=1e6, stop_on_divergence=False, **SMALL)
    assert r.ok and len(r.steps) == 24
    assert r.summary["diverged_at_step"] is not None and any("ran all 24 steps" in w for w in r.warnings), r.warnings


def test_traces_open_as_chrome_traces_with_the_distributed_metadata(session):
    import json

    from parakit.frontends.text import how_to_open_traces

    r = session.run(steps=8, trace=True, **SMALL)
    assert r.ok, r.error
    assert len(r.traces) == 2  # one window, two ranks
    for rank, path in enumerate(r.traces):
        with open(path) as f:
            trace = json.load(f)
        assert trace["distributedInfo"]["rank"] == rank and trace["distributedInfo"]["world_size"] == 2
        assert trace["distributedInfo"]["backend"] == "gloo"
        steps = [e for e in trace["traceEvents"] if e.get("name") == "parakit.step"]
        assert len(steps) == 3 and all(e["ph"] == "X" and e["dur"] > 0 for e in steps)
    text = how_to_open_traces(r)
    assert all(p in text for p in r.traces) and "ui.perfetto.dev" in text and "TraceAnalysis" in text
