"""live=False: rank 0's progress messages carry only the step count (what the hang watch
needs), live=True adds what a live view draws; every message says when it was sent."""

from __future__ import annotations

import time

import torch

from parakit.config.run import RunConfig
from parakit.engine.publish import progress


class Meter:
    def latest(self):
        return {"power_w": 80.0}


class Profiler:
    """The StepProfiler's side progress reads: its latest window, and the stragglers it named."""

    def __init__(self, stragglers=None):
        self.named = stragglers

    def latest(self):
        return {"compute_s": 0.01}

    def stragglers(self):
        return self.named


def test_a_quiet_run_sends_the_step_count_only():
    before = time.time()
    message = progress(RunConfig(live=False, steps=7), 2, torch.tensor(1.5), torch.device("cpu"), Meter(), Profiler())
    assert set(message) == {"step", "steps", "wall_time_s"}
    assert (message["step"], message["steps"]) == (3, 7)
    assert before <= message["wall_time_s"] <= time.time()


def test_a_straggler_named_by_a_window_is_in_the_message_even_when_quiet():
    message = progress(RunConfig(live=False, steps=7), 2, torch.tensor(1.5), torch.device("cpu"), Meter(),
                       Profiler(stragglers=[1]))
    assert message["stragglers"] == [1]
    assert "stragglers" not in progress(RunConfig(live=False, steps=7), 2, torch.tensor(1.5), torch.device("cpu"),
                                        Meter(), Profiler(stragglers=[]))


def test_a_live_run_sends_loss_power_and_breakdown():
    message = progress(RunConfig(), 0, torch.tensor(1.5), torch.device("cpu"), Meter(), Profiler())
    assert message["loss"] == 1.5 and message["power"] == {"power_w": 80.0}
    assert message["breakdown"] == {"compute_s": 0.01}


def test_on_a_gpu_the_loss_is_not_read():
    # Reading it would be a host-device sync every message; the device object is all it looks at.
    message = progress(RunConfig(), 0, torch.tensor(1.5), torch.device("cuda", 0), Meter(), Profiler())
    assert message["loss"] is None


def test_quiet_runs_are_recorded_as_such():
    assert RunConfig(live=False).describe()["live"] is False
    assert "live" not in RunConfig().describe()  # the default leaves earlier records comparable
