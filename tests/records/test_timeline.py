"""Runs against the wall clock: each step's time since the first began, the time a run took
to reach a loss, and the figures of both."""

import pytest

from parakit.plots import PLOTS, loss_time, time_to_loss_figure
from parakit.records.result import OK, RunResult, StepRecord
from parakit.records.timeline import loss_against_time, time_to_loss, why_no_time


def run(run_id, points, status=OK):
    steps = [StepRecord(step=i, loss=v, step_time_s=0.1, rank_step_time_s=[0.1], warmup=i < 1, time_s=t)
             for i, (t, v) in enumerate(points)]
    return RunResult(run_id=run_id, status=status, config={"strategy": "ddp", "model": "gpt"}, world_size=2,
                     backend="gloo", device_names=["cpu"] * 2, steps=steps)


def test_the_time_to_a_loss_is_interpolated_at_the_crossing():
    r = run("a", [(0.1, 3.0), (0.2, 2.5), (0.4, 1.5), (0.5, 1.0)])
    assert time_to_loss(r, 2.0) == pytest.approx(0.3)  # half way from 2.5 (0.2 s) to 1.5 (0.4 s)
    assert time_to_loss(r, 3.5) == pytest.approx(0.1)  # under it from the first step
    assert time_to_loss(r, 0.5) is None and why_no_time(r, 0.5) == "not reached (last loss 1.0000)"


def test_older_records_have_no_times_and_say_so():
    old = run("old", [(None, 3.0), (None, 2.0)])
    assert loss_against_time(old) == ([], [])
    assert time_to_loss(old, 2.5) is None and "no step times" in why_no_time(old, 2.5)
    assert RunResult.from_dict({**old.to_dict(), "steps": [{k: v for k, v in s.items() if k != "time_s"}
                                                           for s in old.to_dict()["steps"]]}).steps[0].time_s is None


def test_the_figures_draw_seconds_and_mark_what_was_not_reached():
    fast, slow, old = run("fast", [(0.1, 3.0), (0.2, 1.0)]), run("slow", [(0.5, 3.0), (1.0, 2.0)]), run("old", [(None, 1.0)])
    fig = loss_time([fast, slow, old])
    assert [list(t.x) for t in fig.data] == [[0.1, 0.2], [0.5, 1.0]]
    assert "1 run skipped (no step times)" in fig.layout.title.subtitle.text
    assert PLOTS["loss-time"] is loss_time  # %parakit plot loss-time
    bars = time_to_loss_figure([fast, slow], 1.5)
    assert list(bars.data[0].y) == [pytest.approx(0.175), None]
    assert [a.text for a in bars.layout.annotations] == ["not reached (last loss 2.0000)"]


def test_a_real_run_keeps_each_steps_time_since_the_first(session):
    r = session.run(strategy="ddp", workers=2, steps=5, batch_size=8)
    assert r.ok, r.error
    times = [s.time_s for s in r.steps]
    assert all(t is not None for t in times) and times == sorted(times) and times[0] > 0
    # the first step's end, and every rank's steps end no sooner than their own times add up
    assert times[0] == pytest.approx(r.steps[0].step_time_s, rel=0.05, abs=2e-3)
    for rank in range(2):
        assert times[-1] >= sum(s.rank_step_time_s[rank] for s in r.steps)
