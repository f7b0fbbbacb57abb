"""The control panel, driven through its widgets' own ``.click()`` and value changes, on a real
2-engine CPU session (conftest's): settings are checked as they change, a run updates the
figures while it goes, finished runs stay, and Stop ends a run within 5 s."""

import re
import time

import pytest
import torch
from torch import nn

from parakit.config.layouts import Strategy
from parakit.config.levers import CompressionKind, Precision
from parakit.frontends.panel import DRAW_EVERY_S, Panel
from parakit.records.store import read_runs


@pytest.fixture
def panel(session):
    p = Panel(session)
    yield p
    p.close()


def wait_for(condition, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_controls_offer_what_config_knows(panel):
    assert list(panel.strategy.options) == [s.value for s in Strategy]
    assert list(panel.precision.options) == [p.value for p in Precision]
    assert list(panel.compression.options) == [k.value for k in CompressionKind]


def test_settings_that_do_not_fit_disable_run_and_say_why(panel, session):
    pids, saved = session._engines.pids(), len(read_runs(session.runs_dir))
    assert not panel.run_button.disabled and panel.problem.value == ""
    panel.strategy.value = "tensor"
    panel.model.value = "cnn"
    assert panel.run_button.disabled
    assert "tensor parallelism has no plan for cnn" in panel.problem.value
    panel.run_button.click()  # .click() reaches the handler even on a disabled button
    assert not panel.running and panel.results == []
    panel.model.value = "mlp"
    assert not panel.run_button.disabled and panel.problem.value == ""

    panel.strategy.value = "single"  # with the slider at 2 workers
    assert panel.run_button.disabled and "strategy single runs on 1 worker" in panel.problem.value
    panel.workers.value = 1
    assert not panel.run_button.disabled
    panel.precision.value = "fp16"
    assert panel.run_button.disabled and "on CPU use bf16 or fp32" in panel.problem.value
    assert session._engines.pids() == pids
    assert len(read_runs(session.runs_dir)) == saved  # nothing ran, nothing was saved


def test_what_a_run_does_on_a_lost_worker_is_checked_before_it_runs(panel, session):
    """on failure and checkpoint every go to Session.run; resume without checkpoints is refused
    in one line, as Session.run refuses it, and Run waits until it fits."""
    assert list(panel.on_failure.options) == ["fail", "resume", "shrink"]
    assert panel.failure_settings() == {"on_failure": "fail"}
    panel.on_failure.value = "resume"
    assert panel.run_button.disabled and "give checkpoint_every=K" in panel.problem.value
    panel.checkpoint_every.value = 5
    assert not panel.run_button.disabled and panel.problem.value == ""
    assert panel.failure_settings() == {"on_failure": "resume", "checkpoint_every": 5}
    panel.on_failure.value, panel.checkpoint_every.value = "fail", 0
    assert not panel.run_button.disabled


def test_a_straggler_goes_to_the_run_and_is_checked_as_session_run_checks_it(panel):
    """The straggler box is the lever `straggler="RANK:FACTOR"`: empty sends nothing, a bad value
    or a rank the run does not have is refused in one line before any engine is touched."""
    workers = panel.workers.value
    assert "straggler" not in panel.settings()
    panel.workers.value = 2
    panel.straggler.value = "1:2"
    assert panel.settings()["straggler"] == "1:2"
    assert not panel.run_button.disabled and panel.problem.value == ""
    panel.straggler.value = "5:2"  # no rank 5 on 2 workers
    assert panel.run_button.disabled and "straggler" in panel.problem.value
    panel.straggler.value = "1:fast"
    assert panel.run_button.disabled and "straggler" in panel.problem.value
    panel.straggler.value, panel.workers.value = "", workers
    assert not panel.run_button.disabled


def test_compression_shows_the_field_it_takes(panel):
    panel.compression.value = "powersgd"
    assert panel.compression_rank.layout.display is None
    assert panel.compression_ratio.layout.display == "none"
    panel.compression_rank.value = 2
    assert panel.settings()["compression"] == "powersgd:2"
    panel.compression.value = "topk"
    assert panel.compression_rank.layout.display == "none"
    assert panel.compression_ratio.layout.display is None
    panel.compression_ratio.value = 0.05
    assert panel.settings()["compression"] == "topk:0.05"
    panel.strategy.value = "fsdp"
    assert panel.run_button.disabled and "does not apply to fsdp" in panel.problem.value
    panel.compression.value = "none"
    assert panel.settings()["compression"] == "none" and not panel.run_button.disabled


def test_a_run_updates_the_figures_while_it_goes_and_stays_to_compare(panel, session):
    updates, live_points = [], []
    panel.progress.observe(lambda change: updates.append((time.monotonic(), change["new"])), "value")
    panel.workers.value, panel.model.value, panel.steps.value, panel.batch_size.value = 2, "mlp", 120, 64
    panel.run_button.click()
    assert panel.running and panel.run_button.disabled and not panel.stop_button.disabled
    while panel.running:  # the kernel's thread is free meanwhile: this loop is it
        traces = panel.loss_figure.data  # (empty for a moment while the end of a run redraws)
        live_points.append(len(traces[-1].x or ()) if traces else 0)
        time.sleep(0.02)
    first = panel.wait()
    assert first.ok, first.error
    assert max(live_points) > 0  # the loss line grew before the run ended
    # The default profiler window is the run's last steps, read after the run's clock stops (so
    # looking costs the steps nothing): its breakdown is drawn when the run ends.
    assert first.summary["breakdown_steps"] == 3
    during = [value for _, value in updates[:-1]]
    assert during and during == sorted(during) and during[0] < 120
    gaps = [b - a for (a, _), (b, _) in zip(updates[:-2], updates[1:-1])]
    assert all(gap >= 0.9 * DRAW_EVERY_S for gap in gaps)  # at most ~4 redraws a second
    assert panel.progress.value == 120 and panel.progress.bar_style == "success"
    assert not panel.run_button.disabled and panel.stop_button.disabled
    assert first.run_id in {r.run_id for r in read_runs(session.runs_dir)}

    panel.strategy.value, panel.workers.value, panel.steps.value = "single", 1, 10
    panel.run_button.click()
    second = panel.wait(60)
    assert second.ok, second.error
    finished = {t.customdata[0][0]: t for t in panel.loss_figure.data if t.customdata is not None}
    assert set(finished) == {first.run_id, second.run_id}  # both stay, side by side
    compute = next(t for t in panel.breakdown_figure.data if t.name == "compute")
    assert list(compute.x) == [first.run_id, second.run_id]
    assert list(compute.y) == pytest.approx([first.summary["compute_time_s"] * 1e3, second.summary["compute_time_s"] * 1e3])
    assert list(finished[first.run_id].y) == pytest.approx([s.loss for s in first.steps])
    assert finished[first.run_id].name.startswith("ddp x2 mlp")
    assert finished[second.run_id].name.startswith("single x1 mlp")
    ddp = next(t for t in panel.speedup_figure.data if t.name.startswith("ddp, mlp"))
    assert list(ddp.x) == [2]
    assert ddp.y[0] == pytest.approx(first.summary["samples_per_s"] / second.summary["samples_per_s"])
    assert any(t.name == "ideal (linear)" for t in panel.speedup_figure.data)

    # repeats: Run runs the settings that many times; the status says the speed-up with its interval
    panel.strategy.value, panel.workers.value, panel.repeats.value = "ddp", 2, 2
    panel.run_button.click()
    last = panel.wait(60)
    assert [r.world_size for r in panel.results[-2:]] == [2, 2] and all(r.ok for r in panel.results[-2:])
    assert last is panel.results[-1] and len(panel.results) == 4
    assert re.search(r"; 2 workers: (\d+\.\d\dx \(|no measurable difference from 1 \()", panel.status.value), \
        panel.status.value
    panel.repeats.value = 1


def test_stop_ends_the_run_within_5_s_saves_it_and_engines_stay_usable(panel, session):
    pids = session._engines.pids()
    panel.strategy.value, panel.workers.value, panel.steps.value = "ddp", 2, 10**6
    panel.run_button.click()
    wait_for(lambda: panel.progress.value > 0)
    asked = time.monotonic()
    panel.stop_button.click()
    result = panel.wait(15)
    assert time.monotonic() - asked < 5
    assert result.status == "stopped" and result.error == f"stopped on request after {len(result.steps)} steps"
    assert len(result.steps) >= 3 and all(s.loss is not None for s in result.steps)  # the steps made are kept
    assert result.summary["samples_per_s"] > 0
    saved = {r.run_id: r for r in read_runs(session.runs_dir)}
    assert saved[result.run_id].status == "stopped"
    assert any(t.name.endswith("(stopped)") for t in panel.loss_figure.data)
    assert panel.progress.bar_style == "warning" and not panel.run_button.disabled
    after = session.run("mlp", workers=2, steps=3, batch_size=8)
    assert after.ok, after.error
    assert session._engines.pids() == pids


def test_a_toggle_moved_during_a_run_switches_it_and_says_at_which_step(panel, session):
    panel.steps.value = 5000
    panel.run_button.click()
    wait_for(lambda: panel._latest.get("step", 0) >= 2)
    panel.precision.value = "bf16"  # the run goes on, in bf16
    wait_for(lambda: panel.switches)
    step, change = panel.switches[0]
    assert change == {"precision": "bf16"} and f"at step {step}" in panel.status.value
    wait_for(lambda: panel._latest.get("step", 0) > step + 2)
    panel.stop_button.click()
    result = panel.wait(30)
    assert [(g["first_step"], g["settings"]["precision"]) for g in result.segments] == [(0, "fp32"), (step, "bf16")]
    assert not panel.running and panel.problem.value == ""


def test_callback_errors_go_to_the_panel_log(panel, session, monkeypatch):
    def broken(**settings):
        raise RuntimeError("boom")

    monkeypatch.setattr(session, "config", broken)
    panel.steps.value = 7  # must not raise into the widget machinery
    assert "RuntimeError: boom" in "".join(o.get("text", "") for o in panel.log.outputs)


def test_shows_itself_and_close_leaves_a_session_it_did_not_start(session):
    panel = Panel(session)
    bundle = panel._repr_mimebundle_()
    assert bundle["application/vnd.jupyter.widget-view+json"]["model_id"] == panel.widget.model_id
    panel.close()
    assert panel.widget.comm is None and panel.loss_figure.comm is None
    assert all(row.alive for row in session.status())


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(x)


def tiny_batches(step, global_batch_size):
    g = torch.Generator().manual_seed(step)
    return torch.randn(global_batch_size, 4, generator=g), torch.randint(0, 2, (global_batch_size,), generator=g)


def test_your_own_models_sit_beside_the_built_ins_and_a_missing_baseline_is_one_click(session):
    with pytest.raises(ValueError, match=r"models\['mlp'\] must be a model"):
        Panel(session, models={"mlp": Tiny})
    panel = Panel(session, models={"tiny": (Tiny, tiny_batches)})
    try:
        assert list(panel.model.options)[-1] == "tiny"
        panel.model.value, panel.strategy.value, panel.workers.value = "tiny", "ddp", 2
        panel.steps.value, panel.batch_size.value = 6, 8
        assert panel.settings()["model"] is Tiny and panel.settings()["data"] is tiny_batches
        panel.run_button.click()
        two = panel.wait(60)
        assert two.ok and two.config["model"] == "Tiny" and two.world_size == 2, two.error
        # No 1-worker run of Tiny yet: the speed-up says so, and a button offers to run it.
        assert panel.baseline_button.layout.display is None
        panel.baseline_button.click()
        one = panel.wait(60)
        assert one.ok and one.world_size == 1 and one.config["strategy"] == "ddp" and one.config["model"] == "Tiny"
        assert panel.workers.value == 2  # the controls stay as the user set them
        assert panel.baseline_button.layout.display == "none"
        line = next(t for t in panel.speedup_figure.data if t.name.startswith("ddp, Tiny"))
        assert line.y[list(line.x).index(2)] == pytest.approx(two.summary["samples_per_s"] / one.summary["samples_per_s"])
        assert all(f.layout.width == 580 for f in panel.figures.values())  # two a row at 1280 px
    finally:
        panel.close()
