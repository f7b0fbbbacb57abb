"""The interval rule (records/intervals.py): each run's interval, the repeats of a
configuration, the ratio and its verdict, the warnings, and the runs frame's columns."""

from __future__ import annotations

import math
import random

import pytest

import parakit
from parakit.records import intervals
from parakit.records.intervals import FASTER, SAME, SLOWER, combine, ratio, still_settling, within_run_sd
from parakit.records.machine_load import busy_warning, is_busy, machine_load
from parakit.records.result import RunResult
from parakit.records.store import runs_frame
from parakit.records.summary_fields import Summary
from tests.records.test_frame import result


def test_a_run_whose_steps_agree_has_no_within_run_noise_and_noisy_steps_have_more():
    assert within_run_sd([0.05] * 12) == 0.0
    rng = random.Random(1)
    calm = [0.05 * (1 + 0.02 * rng.gauss(0, 1)) for _ in range(18)]
    rough = [0.05 * (1 + 0.30 * abs(rng.gauss(0, 1))) for _ in range(18)]
    assert 0 < within_run_sd(calm) < within_run_sd(rough)
    assert within_run_sd(rough) == within_run_sd(rough)  # seeded: a record is reproducible


def test_one_run_carries_the_run_to_run_spread_and_repeats_narrow_it():
    one = combine([100.0], [0.0])
    assert one.log_sd == pytest.approx(intervals.RUN_TO_RUN_SD)
    assert one.low < 100.0 < one.high
    two = combine([100.0, 100.0], [0.0, 0.0])
    assert two.log_sd == pytest.approx(intervals.RUN_TO_RUN_SD / math.sqrt(2))
    # three repeats that disagree more than the floor: their own spread, wider than the floor's
    spread = combine([80.0, 100.0, 125.0], [0.0] * 3)
    assert spread.value == pytest.approx(100.0) and spread.log_sd > intervals.RUN_TO_RUN_SD / math.sqrt(3)


def test_the_verdict_says_faster_only_when_the_interval_leaves_one_out():
    base = combine([100.0], [0.01])
    assert ratio(combine([300.0], [0.01]), base).verdict == FASTER
    assert ratio(combine([30.0], [0.01]), base).verdict == SLOWER
    same = ratio(combine([105.0], [0.01]), base)
    assert same.verdict == SAME and same.low < 1 < same.high
    assert str(same).startswith("no measurable difference: 1.05x (")


def test_the_speedup_is_said_one_way():
    assert intervals.speedup_text(2, 1.54, 1.47, 1.61) == "2 workers: 1.54x (1.47-1.61)"
    assert intervals.speedup_text(2, 1.0, 0.93, 1.08) == "2 workers: no measurable difference from 1 (0.93-1.08)"


def test_steps_still_falling_are_told_and_steady_noisy_steps_are_not():
    falling = [0.20, 0.18, 0.16, 0.15, 0.10, 0.10, 0.10, 0.10]
    assert still_settling(falling).startswith("step times still falling")
    rng = random.Random(3)
    steady = [0.1 * (1 + 0.05 * rng.gauss(0, 1)) for _ in range(16)]
    assert still_settling(steady) is None
    assert still_settling(falling[:6]) is None  # too few steps to tell


def test_compare_takes_runs_or_repeats_and_refuses_a_run_without_throughput_in_one_line():
    fast, slow = result(400.0, workers=2), result(100.0)
    found = parakit.compare(fast, slow)
    assert found.verdict == FASTER and found.ratio == pytest.approx(4.0) and found.repeats == (1, 1)
    assert parakit.compare([fast, result(400.0, workers=2)], slow).repeats == (2, 1)
    failed = result(None, status="failed")
    with pytest.raises(ValueError, match=r"^compare: b holds run-\d+ \(failed\) with no measured samples_per_s$"):
        parakit.compare(fast, failed)
    with pytest.raises(ValueError, match="compare: a holds no run"):
        parakit.compare([], slow)


def test_the_frame_gives_every_speedup_its_interval_its_repeats_and_a_verdict():
    frame = runs_frame([result(100.0), result(104.0), result(101.0, workers=2), result(300.0, workers=2, batch_size=32),
                        result(100.0, batch_size=32)])
    one, two = frame.iloc[0], frame.iloc[2]
    assert one["repeats"] == 2 and one["speedup"] == 1.0 and not isinstance(one["verdict"], str)
    assert two["repeats"] == 1 and two["verdict"] == SAME
    assert two["speedup_low"] < two["speedup"] < two["speedup_high"]
    assert two["strong_efficiency_low"] == pytest.approx(two["speedup_low"] / 2)
    faster = frame.iloc[3]
    assert faster["verdict"] == FASTER and faster["speedup_low"] > 1


def test_a_speedup_beyond_the_ideal_by_more_than_its_interval_is_starred_and_explained():
    from parakit.plots.runs import SUPERLINEAR, speedup

    figure = speedup([result(100.0), result(400.0, workers=2)])
    assert any(t.name == "beyond the ideal" for t in figure.data)
    assert SUPERLINEAR.split(";")[0] in figure.layout.title.subtitle.text
    plain = speedup([result(100.0), result(180.0, workers=2)])
    assert not any(t.name == "beyond the ideal" for t in plain.data)
    drawn = next(t for t in plain.data if t.name.startswith("ddp"))
    assert drawn.error_y.array[1] > 0 and drawn.error_y.arrayminus[1] > 0


def _load(host, busy, own, window=1.0, cpus=2):
    from types import SimpleNamespace

    return SimpleNamespace(machine_load={"host": host, "cpus": cpus, "busy_cpu_s": busy, "own_cpu_s": own,
                                         "window_s": window})


def test_the_machine_load_is_what_others_used_on_the_busiest_host():
    quiet = machine_load([_load("a", 2.0, 1.0), _load("a", 2.0, 0.95)], 1.0)
    assert quiet["other_cpu_s"] == pytest.approx(0.05) and quiet["other_cpu_share"] == pytest.approx(0.025)
    busy = machine_load([_load("a", 2.0, 1.0), _load("b", 1.9, 0.5)], 1.0)
    assert busy["busiest_host"] == "b" and busy["other_cpu_share"] == pytest.approx(0.7)
    assert "other processes used 70% of b's CPU" in busy_warning(busy) and is_busy(busy)
    assert not is_busy(quiet)
    # a tick or two of others' CPU in a window of a few ms is no busy machine
    assert not is_busy(machine_load([_load("a", 0.03, 0.01, window=0.02)], 0.02))
    assert machine_load([_load("a", 1, 1), type("R", (), {"machine_load": None})()], 1.0)["other_cpu_share"] is None


def test_a_record_from_before_intervals_still_compares():
    old = RunResult(run_id="old", status="ok", config=result(100.0).config, world_size=1, backend="gloo",
                    device_names=["cpu"], summary=Summary(samples_per_s=100.0, step_time_s=0.64), started_at="x")
    assert parakit.compare(result(300.0, workers=2), old).verdict == FASTER


def test_the_public_api_reads_runs_back_and_reaches_the_plots(tmp_path):
    from parakit.records.store import save_run

    run = result(120.0)
    save_run(run, tmp_path)
    assert [r.run_id for r in parakit.read_runs(tmp_path)] == [run.run_id]
    assert parakit.plots.speedup is not None and "plots" in dir(parakit) and "compare" in parakit.__all__
