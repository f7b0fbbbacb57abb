"""A run that survives a lost worker, for real on 2 CPU engines: a rank's engine is SIGKILLed
mid-run (the fault lever), the run goes on from its last background DCP checkpoint, and its
losses are an unfailed run's, each step counted once (session/recovery.py)."""

from __future__ import annotations

import json
import os
import threading
import time

import psutil
import pytest
import torch

from parakit.config.switch import STATE_FACTS
from parakit.plots.runs import PLOTS
from parakit.records.result import headline
from parakit.records.store import read_runs

QUICK = dict(model="mlp", strategy="ddp", workers=2, batch_size=8, seed=0, profile_every=0, warmup_steps=1)


@pytest.fixture(scope="module")
def reference(session):
    """60 steps, nothing killed: what a recovered run must reproduce. Its background
    checkpoints leave the training as it is, and it starts the spare engine a lost one is
    replaced with (kept for the next run that may recover)."""
    plain = session.run(steps=60, **QUICK)
    run = session.run(steps=60, checkpoint_every=10, on_failure="resume", **QUICK)
    assert plain.ok and run.ok, (plain.error, run.error)
    assert [s.loss for s in run.steps] == [s.loss for s in plain.steps]
    assert run.summary.instrument_overhead.checkpoints == 5 and not run.segments
    return run


def gap(steps, reference) -> float:
    assert [s.step for s in steps] == [s.step for s in reference[:len(steps)]]
    return max(abs(a.loss - b.loss) for a, b in zip(steps, reference))


def watch_death(pid: int) -> dict:
    """When ``pid`` ends, as seen from outside (epoch seconds), polled every 10 ms."""
    seen = {}

    def poll():
        while psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
            time.sleep(0.01)
        seen["at"] = time.time()

    threading.Thread(target=poll, daemon=True).start()
    return seen


def test_a_worker_killed_at_step_33_of_60_resumes_and_trains_as_if_nothing_happened(session, reference):
    victim, progress = session._engines.ranks(2)[1].pid, []
    death = watch_death(victim)
    run = session.run(steps=60, checkpoint_every=10, on_failure="resume", fault="kill:1@33",
                      on_progress=lambda p: progress.append((time.time(), p.get("step"))), **QUICK)
    assert run.ok, run.error
    assert gap(run.steps, reference.steps) < 1e-5  # every step once, the lost ones trained again
    [recovery] = run.recovered
    assert (recovery.how, recovery.rank, recovery.died_at_step) == ("resume", 1, 33)
    # the checkpoint after step 30 was still being written when rank 1 died, or whole
    assert recovery.checkpoint_step in (20, 30) and recovery.steps_retrained == 33 - recovery.checkpoint_step
    assert recovery.workers_before == recovery.workers_after == 2
    assert 0 < recovery.recover_s < 15 and recovery.lost_s >= recovery.recover_s
    # seen from outside: the engine's end (polled), and rank 0's first progress after it (sent
    # every 0.2 s, read every 0.2 s) from the resumed segment
    back = next(t for t, step in progress if t > death["at"] and step is not None)
    assert back - death["at"] < 15
    # the record: a segment labelled as the recovery, placed after the lost time on the time axis
    first, second = run.segments
    assert (first.first_step, first.last_step, second.first_step, second.last_step) == (
        0, recovery.checkpoint_step - 1, recovery.checkpoint_step, 59)
    assert second.label == f"recovered: rank 1 died at step 33, resumed from {recovery.checkpoint_step}"
    assert second.switch_s == recovery.lost_s and run.summary["switches"] == 0
    kept, resumed = run.steps[recovery.checkpoint_step - 1], run.steps[recovery.checkpoint_step]
    assert resumed.time_s - resumed.step_time_s - kept.time_s == pytest.approx(recovery.lost_s)
    assert "recovered: rank 1 died at step 33" in headline(run)  # the panel's status line says it too
    assert victim not in session._engines.pids() and session.workers == 2
    # the background checkpoints' cost, measured like every instrument
    cost = run.segments[1].summary.instrument_overhead
    assert cost.checkpoints == len(range(recovery.checkpoint_step + 10, 60, 10))
    assert 0 < cost.checkpoint_pause_s < cost.checkpoint_write_s
    # the loss and step-time figures mark it in red; the time axis shades the time it lost
    for kind in ("loss", "step_times", "loss-time"):
        marks = [a.text for a in PLOTS[kind]([run]).layout.annotations if a.text.startswith("↺")]
        assert marks == [f"↺ {second.label}"], kind
    assert [r for r in PLOTS["loss-time"]([run]).layout.shapes if r.type == "rect"]
    stored = next(r for r in read_runs(session.runs_dir) if r.run_id == run.run_id)
    assert stored.recovered == run.recovered
    assert not [p for p in session.runs_dir.iterdir() if p.name.startswith(".")]  # checkpoints removed


def test_shrink_goes_on_with_the_worker_left(session, reference):
    run = session.run(steps=20, checkpoint_every=5, on_failure="shrink", fault="kill:1@12", **QUICK)
    assert run.ok, run.error
    assert [(g.world_size, g.settings["strategy"]) for g in run.segments] == [(2, "ddp"), (1, "single")]
    [recovery] = run.recovered
    assert (recovery.how, recovery.workers_after) == ("shrink", 1)
    assert run.segments[1].label.endswith("on 1 worker(s)")
    assert gap(run.steps, reference.steps) < 1e-4  # the same global batch on 1 worker: fp32 sums in another order
    assert session.workers == 2  # the session gets its engines back for the next run


def broken_at_step_7(step, batch):
    if step == 7:
        raise ValueError("this batch is broken on purpose")
    x = torch.randn(batch, 6, generator=torch.Generator().manual_seed(step))
    return x, x.sum(dim=1)


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.body = torch.nn.Linear(6, 1)

    def forward(self, x):
        return self.body(x).squeeze(-1)


def mse(outputs, targets):
    return torch.nn.functional.mse_loss(outputs, targets)


def test_a_failure_that_is_not_a_death_ends_the_run_and_keeps_its_last_checkpoint(session):
    run = session.run(Net, data=broken_at_step_7, loss=mse, steps=12, checkpoint_every=5, on_failure="resume",
                      **{k: v for k, v in QUICK.items() if k != "model"})
    assert run.status == "failed" and "this batch is broken on purpose" in run.error
    assert any("after a lost engine only" in w for w in run.warnings) and not run.recovered
    # nothing trained lost: the checkpoint after step 5 is the run's saved state
    assert json.loads((session.runs_dir / f"{run.run_id}-state" / STATE_FACTS).read_text())["steps_done"] == 5
    assert run.state_dir == str(session.runs_dir / f"{run.run_id}-state") and os.path.isdir(run.state_dir)


@pytest.mark.parametrize("settings, message", [
    (dict(checkpoint_every=0), r"checkpoint_every must be >= 1 \(got 0\)"),
    (dict(on_failure="retry"), r"on_failure must be one of fail, resume, shrink \(got 'retry'\)"),
    (dict(on_failure="resume"), r"give checkpoint_every=K \(steps\) too"),
    (dict(fault="kill 1 at 3"), r"fault must be 'kill:RANK@STEP'"),
    (dict(fault="kill:2@3"), r"fault kills rank 2, but the run has ranks 0-1"),
    (dict(checkpoint_every=5, sync="diloco:4"), r"checkpoint_every cannot save sync diloco:4's"),
    (dict(checkpoint_every=5, on_failure="shrink", strategy="single", workers=1), r"needs 2 workers or more"),
    (dict(checkpoint_every=5, on_failure="shrink", model="gpt", strategy="hybrid", workers=4),
     r"on_failure='shrink' cannot go on with 3 worker\(s\) of hybrid x4 gpt: hybrid needs an even number"),
])
def test_bad_settings_are_refused_in_one_line_before_any_engine_is_touched(session, settings, message):
    pids, runs = session._engines.pids(), len(list(session.runs_dir.glob("*.json")))
    with pytest.raises(ValueError, match=message) as raised:
        session.run(steps=20, **{**QUICK, **settings})
    assert "\n" not in str(raised.value)
    assert session._engines.pids() == pids and len(list(session.runs_dir.glob("*.json"))) == runs
