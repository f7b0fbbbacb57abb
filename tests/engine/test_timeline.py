"""The per-rank timeline and stragglers: the rules on synthetic events first (the classification
the breakdown and the timeline share, the wait for a late peer, thinning, the planned pipeline
schedule, the straggler rule), then real runs on the shared 2 CPU engines: a ddp, an fsdp and a
pipeline run drawn, and the straggler lever making rank 0 wait."""

from __future__ import annotations

from typing import NamedTuple

import pytest

from parakit.config.run import RunConfig
from parakit.engine import peer_wait
from parakit.engine.breakdown import COMM, COMPUTE, STEP_EVENT, Span, breakdown, classify
from parakit.engine.step_spans import MOST_SPANS, rank_timeline
from parakit.records.pipeline_plan import plan_bubble, planned_schedule
from parakit.records.rank_timeline import MAIN
from parakit.records.result import headline
from parakit.records.stragglers import find_stragglers


class Range(NamedTuple):
    start: float
    end: float


def event(name, start_us, end_us, thread=1, nbytes=None):
    """An event as the profiler's reader gives it (hashable: the waits are keyed by event)."""
    return Span(name, Range(start_us, end_us), thread, "DeviceType.CPU", nbytes)


def test_one_rule_classifies_events_for_the_breakdown_and_the_timeline():
    marker = event(STEP_EVENT, 0, 100)
    assert classify(event("gloo:all_reduce", 0, 1, thread=9), False, 1) == COMM
    assert classify(event("aten::mm", 0, 1), False, 1) == COMPUTE
    assert classify(event("aten::mm", 0, 1, thread=7), False, 1) is None  # another thread's
    assert classify(event("c10d::allreduce_", 0, 1), False, 1) is None  # enqueueing is not compute
    # the timeline's main lane is the breakdown, in time: its parts add up to the same sums
    events = [marker, event("aten::addmm", 0, 40), event("autograd::engine::evaluate_function: X", 50, 70),
              event("gloo:all_reduce", 30, 90, thread=2, nbytes=4096)]
    parts = breakdown(events, cuda=False, marker=marker)
    line = rank_timeline(events, [marker], [5], False, {}, rank=0)
    us = 1e-6
    assert line.total_s("compute") == pytest.approx(parts["compute_time_s"]) == pytest.approx(60 * us)
    assert line.total_s("exposed communication") == pytest.approx(parts["exposed_comm_time_s"])
    assert line.total_s("idle") == pytest.approx(parts["idle_time_s"]) == pytest.approx(10 * us)
    assert [s.name for s in line.lane(MAIN) if s.kind == "compute"] == ["forward", "backward"]
    assert [(s.name, s.bytes) for s in line.lane("comm")] == [("all_reduce", 4096)]


def test_a_wait_for_a_late_peer_inside_a_collective_is_idle_not_communication():
    # rank 0 enters the all-reduce at 10 us, rank 1 at 60 us: rank 0's first 50 us are a wait
    marker = event(STEP_EVENT, 0, 100)
    collective = event("gloo:all_reduce", 10, 80, thread=2)
    events = [marker, event("aten::mm", 0, 10), collective]
    mine = peer_wait.entries(events, [marker], cuda=False)
    waits = peer_wait.waits(mine, [[[("gloo:all_reduce", 10.0)]], [[("gloo:all_reduce", 60.0)]]])
    assert waits == {collective: 50.0}
    plain, waited = breakdown(events, False, marker), breakdown(events, False, marker, waits)
    assert plain["idle_time_s"] == pytest.approx(20e-6) and waited["idle_time_s"] == pytest.approx(70e-6)
    assert waited["comm_time_s"] == pytest.approx(20e-6) and waited["peer_wait_time_s"] == pytest.approx(50e-6)
    # collectives that differ between ranks are not matched: no wait is made up
    assert peer_wait.waits(mine, [[[("gloo:all_reduce", 10.0)]], [[("gloo:all_gather", 60.0)]]]) == {}


def test_many_operators_are_thinned_not_truncated():
    marker = event(STEP_EVENT, 0, 100_000)
    ops = [event("aten::add", 10 * i, 10 * i + 6) for i in range(10_000)]  # 10 000 ops, 4 us apart
    line = rank_timeline([marker, *ops], [marker], [0], False, {}, rank=0)
    main = line.lane(MAIN)
    assert len(main) <= MOST_SPANS
    assert main[0].start_s == 0 and main[-1].end_s == pytest.approx(0.1)  # the whole step is drawn
    assert sum(s.end_s - s.start_s for s in main) == pytest.approx(0.1)
    assert line.merged_below_s > 0


@pytest.mark.parametrize("m", [2, 4, 8])
def test_the_planned_schedules_bubble_is_the_ideal_one(m):
    from torch.distributed.pipelining._schedule_visualizer import get_schedule_ops

    from parakit.config.layouts import Schedule
    from parakit.engine.strategies.pipeline import planned_order

    p = 2
    for schedule, v in ((Schedule.GPIPE, 1), (Schedule.ONE_F_ONE_B, 1)):
        orders = [planned_order(None, schedule, r, r, p, m) for r in range(p)]
        assert plan_bubble(planned_schedule(orders, 1.0, 2.0)) == pytest.approx((p - 1) / (v * m + p - 1))
    ops = get_schedule_ops("Interleaved1F1B", p, m)
    orders = [[str(a) for a in rank if a is not None and a.computation_type.value in "FB"] for rank in ops]
    assert plan_bubble(planned_schedule(orders, 1.0, 2.0)) == pytest.approx((p - 1) / (2 * m + p - 1))


def test_the_straggler_rule():
    even = [[0.010, 0.011, 0.010], [0.011, 0.010, 0.010], [0.010, 0.010, 0.011]]
    assert find_stragglers(even) == []
    slow = [[0.010, 0.021, 0.010], [0.011, 0.020, 0.010], [0.010, 0.022, 0.011]]
    assert find_stragglers(slow) == [1]
    once = [[0.010, 0.030, 0.010], [0.011, 0.010, 0.010], [0.010, 0.010, 0.011]]  # not consistently
    assert find_stragglers(once) == []


@pytest.mark.parametrize("kwargs, says", [
    ({"workers": 1, "straggler": "0:2"}, "needs 2 or more workers"),
    ({"workers": 2, "straggler": "2:2"}, "ranks 0-1"),
    ({"workers": 2, "straggler": "1:1"}, "above 1"),
    ({"workers": 2, "straggler": "slow"}, "RANK:FACTOR"),
])
def test_the_straggler_lever_is_checked_in_one_line(kwargs, says):
    with pytest.raises(ValueError, match=says) as caught:
        RunConfig(**kwargs)
    assert "\n" not in str(caught.value)


def test_the_cli_and_the_magics_take_the_straggler_lever():
    import argparse

    from parakit.frontends.options import add_run_options, run_settings

    parser = argparse.ArgumentParser()
    add_run_options(parser)
    settings = run_settings(parser.parse_args(["--straggler", "1:2"]))
    assert RunConfig(workers=2, **settings).straggler == "1:2"


# -- real runs on 2 CPU engines ------------------------------------------------------------
SMALL = {"model": "mlp", "model_options": {"width": 256, "depth": 4}, "workers": 2, "batch_size": 64, "steps": 8}


def _check_lanes(run):
    assert run.ok, run.error
    assert [line.rank for line in run.timelines] == [0, 1]
    for line in run.timelines:
        assert line.steps == [5, 6, 7]
        for start, end in line.step_bounds_s:  # the main lane covers every recorded step, whole
            inside = [s for s in line.lane(MAIN) if start - 1e-9 <= s.start_s and s.end_s <= end + 1e-9]
            assert sum(s.end_s - s.start_s for s in inside) == pytest.approx(end - start, rel=1e-6)
        # the same events, the same rule: the timeline's compute is the breakdown's, to the thinning
        recorded = [st.rank_compute_time_s[line.rank] for st in run.steps if st.rank_compute_time_s]
        # (to the thinning, which draws slivers shorter than 0.2 % of a step as their neighbours)
        assert line.total_s("compute") == pytest.approx(sum(recorded), rel=0.25)
        assert 0 <= line.export_s < 1


def test_ddp_and_fsdp_runs_draw_a_timeline_with_their_collectives(session):
    from parakit.plots import timeline

    for strategy, collective in (("ddp", "all_reduce"), ("fsdp", "all_gather")):
        run = session.run(strategy=strategy, **SMALL)
        _check_lanes(run)
        comm = run.timelines[0].lane("comm")
        assert any(s.name == collective and s.bytes for s in comm), comm
        fig = timeline(run)
        assert {"rank 0", "rank 0 comm", "rank 1", "rank 1 comm"} <= {y for trace in fig.data for y in trace.y}


def test_a_pipeline_run_draws_its_planned_schedule_beside_the_measured_one(session):
    from parakit.plots import timeline

    run = session.run(strategy="pipeline", schedule="1f1b", microbatches=4, **SMALL)
    _check_lanes(run)
    planned = [line.planned for line in run.timelines]
    assert planned[0] == ["0F0", "0F1", "0B0", "0F2", "0B1", "0F3", "0B2", "0B3"]
    assert planned[1] == ["1F0", "1B0", "1F1", "1B1", "1F2", "1B2", "1F3", "1B3"]
    measured = {s.name for s in run.timelines[1].lane(MAIN) if s.kind == "compute"}
    assert {"1F0", "1B3"} <= measured  # the micro-batch actions, as torch names them
    fig = timeline(run)
    assert "rank 0 planned" in {y for trace in fig.data for y in trace.y}
    assert run.summary["bubble_ideal"] == pytest.approx(1 / 5)
    assert f"against ideal (p-1)/(v*m+p-1) = 0.20" in fig.layout.title.subtitle.text
    assert run.unmeasured["stragglers"].startswith("a pipeline's ranks hold different stages")


def test_a_straggler_makes_the_other_rank_wait_and_is_named(session):
    """Rank 1 computing twice as long: rank 0 waits for it in every step's all-reduce, and that
    wait is idle time. A model whose step computes for tens of ms, so the wait is well above the
    milliseconds a busy 2-core machine's scheduler adds; every measured step is recorded (10),
    so the rule has the steps to tell a straggler from that noise."""
    measured = {**SMALL, "model_options": {"width": 512, "depth": 8}, "steps": 12, "profile_every": 1}
    plain = session.run(strategy="ddp", **measured)
    slowed = session.run(strategy="ddp", straggler="1:2", **measured)
    assert plain.ok and slowed.ok, (plain.error, slowed.error)
    assert slowed.summary["stragglers"] == [1], slowed.summary["rank_compute_time_s"]
    assert "straggler: rank 1" in headline(slowed) and slowed.summary["method"]["stragglers"]
    assert slowed.summary["rank_idle_time_s"][0] > plain.summary["rank_idle_time_s"][0], \
        (plain.summary["rank_idle_time_s"], slowed.summary["rank_idle_time_s"])
    assert any(s.name == "straggler" for s in slowed.timelines[1].lane(MAIN))
    assert slowed.config["straggler"] == "1:2" and "straggler 1:2" in headline(slowed)
