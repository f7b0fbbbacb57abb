"""Speed-up and strong / weak scaling efficiency over the runs frame (parakit/records/frame.py)."""

from __future__ import annotations

import itertools
import math

import pandas as pd
import pytest

from parakit.config.run import RunConfig
from parakit.records.result import RunResult
from parakit.records.frame import add_scaling
from parakit.records.store import runs_frame
from parakit.records.summary_fields import Summary

_ids = itertools.count()


def result(samples_per_s: float | None = 100.0, *, status="ok", device="cpu", **settings) -> RunResult:
    """A run as the store keeps it; only the config and the throughput matter here."""
    settings = {"strategy": "ddp", "workers": 1, "batch_size": 64, **settings}
    config = RunConfig(**settings)
    n = next(_ids)
    summary = Summary() if samples_per_s is None else Summary(
        samples_per_s=samples_per_s, step_time_s=config.batch_size / samples_per_s)
    return RunResult(run_id=f"run-{n}", status=status, config=config.describe(), world_size=config.workers,
                     backend="gloo", device_names=[device] * config.workers, summary=summary,
                     started_at=f"2025-01-01T00:00:{n:02d}")


def scaled(*runs: RunResult) -> pd.DataFrame:
    return add_scaling(runs_frame(list(runs)))


def test_strong_scaling_keeps_the_global_batch():
    frame = scaled(result(100.0, workers=1), result(180.0, workers=2), result(320.0, workers=4))

    assert list(frame["speedup"]) == pytest.approx([1.0, 1.8, 3.2])
    assert list(frame["strong_efficiency"]) == pytest.approx([1.0, 0.9, 0.8])
    # no 1-worker run with 32 or 16 rows: weak efficiency is unknown, not made up
    assert frame["weak_efficiency"].iloc[0] == pytest.approx(1.0)
    assert frame["weak_efficiency"].iloc[1:].isna().all()
    assert set(frame["scaling_group"]) == {"strong: ddp, mlp, fp32, batch 64"}


def test_weak_scaling_keeps_the_batch_per_worker():
    frame = scaled(result(100.0, workers=1, batch_size=32), result(190.0, workers=2, batch_size=64),
                   result(360.0, workers=4, batch_size=128))

    assert list(frame["weak_efficiency"]) == pytest.approx([1.0, 0.95, 0.9])
    # throughput against 1 worker's: the scaled speed-up, workers * weak efficiency
    assert list(frame["speedup"]) == pytest.approx([1.0, 1.9, 3.6])
    assert frame["strong_efficiency"].iloc[1:].isna().all()
    # the 1-worker run is labelled with the sweep it starts, not its lone batch-32 group
    assert set(frame["scaling_group"]) == {"weak: ddp, mlp, fp32, 32 per worker"}


def test_a_run_in_both_kinds_of_group_gets_both_efficiencies_and_the_strong_speedup():
    frame = scaled(result(100.0, workers=1, batch_size=32), result(160.0, workers=1, batch_size=64),
                   result(240.0, workers=2, batch_size=64))
    two = frame.iloc[2]

    assert two["speedup"] == pytest.approx(1.5)  # against the same global batch
    assert two["strong_efficiency"] == pytest.approx(0.75)
    assert two["weak_efficiency"] == pytest.approx(1.2)  # 120 per worker against 100
    assert two["scaling_group"] == "strong: ddp, mlp, fp32, batch 64"


def test_the_baseline_is_a_one_worker_run_of_the_same_strategy_before_a_single_run():
    frame = scaled(
        result(120.0, strategy="single"),
        result(100.0, strategy="ddp"),
        result(150.0, strategy="ddp", workers=2),
        result(180.0, strategy="fsdp", workers=2),  # no 1-worker fsdp run: single stands in
    )

    assert frame["speedup"].iloc[2] == pytest.approx(1.5)
    assert frame["speedup"].iloc[3] == pytest.approx(1.5)
    assert frame["strong_efficiency"].iloc[3] == pytest.approx(0.75)


def test_a_single_run_stands_in_only_with_the_same_other_settings():
    frame = scaled(
        result(120.0, strategy="single", precision="bf16"),
        result(150.0, strategy="ddp", workers=2),
        # compression is the layout's own: a single run (which has none) still stands in
        result(200.0, strategy="ddp", workers=2, precision="bf16", compression="powersgd:2"),
    )

    assert math.isnan(frame["speedup"].iloc[1])  # fp32 ddp against a bf16 single: no
    assert frame["speedup"].iloc[2] == pytest.approx(200 / 120)


def test_only_ok_runs_count():
    frame = scaled(result(None, status="failed"), result(150.0, workers=2), result(100.0, workers=1),
                   result(500.0, workers=4, status="stopped"))

    assert math.isnan(frame["speedup"].iloc[0]) and pd.isna(frame["scaling_group"].iloc[0])
    assert frame["speedup"].iloc[1] == pytest.approx(1.5)
    assert math.isnan(frame["speedup"].iloc[3]) and pd.isna(frame["scaling_group"].iloc[3])


def test_a_group_without_a_one_worker_run_has_no_speedup():
    frame = scaled(result(150.0, workers=2), result(280.0, workers=4), result(90.0, workers=1, precision="bf16"))

    assert frame["speedup"].iloc[:2].isna().all()
    assert frame["strong_efficiency"].iloc[:2].isna().all()


def test_groups_differ_in_any_setting_that_changes_the_work_and_their_labels_say_which():
    frame = scaled(result(100.0, precision="bf16"), result(150.0, workers=2, precision="bf16"),
                   result(50.0), result(95.0, workers=2),
                   result(400.0, device="NVIDIA H100"), result(700.0, workers=2, device="NVIDIA H100"))

    assert list(frame["speedup"]) == pytest.approx([1.0, 1.5, 1.0, 1.9, 1.0, 1.75])
    assert frame["scaling_group"].iloc[1] == "strong: ddp, mlp, bf16, batch 64, device cpu"
    assert frame["scaling_group"].iloc[3] == "strong: ddp, mlp, fp32, batch 64, device cpu"
    assert frame["scaling_group"].iloc[5] == "strong: ddp, mlp, fp32, batch 64, device NVIDIA H100"


def test_how_long_a_run_ran_its_seed_lr_and_instruments_do_not_split_a_group():
    frame = scaled(result(100.0, steps=40, seed=1), result(150.0, workers=2, lr=0.01, profile_every=0))
    assert frame["speedup"].iloc[1] == pytest.approx(1.5)


def test_repeated_baselines_count_by_their_median():
    frame = scaled(result(90.0), result(100.0), result(130.0), result(200.0, workers=2))
    assert frame["speedup"].iloc[3] == pytest.approx(2.0)


def test_settings_that_follow_the_worker_count_do_not_split_a_group():
    # a pipeline's default micro-batches are twice its ranks: 2 at 1 worker, 4 at 2
    frame = scaled(result(100.0, strategy="pipeline", model_options={"depth": 5}),
                   result(150.0, strategy="pipeline", workers=2, model_options={"depth": 5}))
    assert list(frame["microbatches"]) == [2, 4]
    assert frame["speedup"].iloc[1] == pytest.approx(1.5)


def test_model_options_split_groups_where_the_frame_has_them():
    frame = runs_frame([result(100.0), result(150.0, workers=2), result(40.0, workers=2)])
    frame["model_options"] = [{"width": 64}, {"width": 64}, {"width": 512}]

    out = add_scaling(frame)

    assert out["speedup"].iloc[1] == pytest.approx(1.5)
    assert math.isnan(out["speedup"].iloc[2])
    assert out["scaling_group"].iloc[2] == "strong: ddp, mlp, fp32, batch 64, model_options width=512"


def test_an_empty_or_unmeasured_frame_gets_the_columns_and_no_figures():
    empty = add_scaling(pd.DataFrame())
    assert {"speedup", "strong_efficiency", "weak_efficiency", "scaling_group"} <= set(empty.columns)

    failed = scaled(result(None, status="failed"))
    assert failed["speedup"].isna().all() and failed["scaling_group"].isna().all()


def test_the_input_frame_is_left_as_it_was_and_a_repeated_index_is_fine():
    frame = runs_frame([result(100.0), result(150.0, workers=2)])
    assert list(frame["speedup"]) == pytest.approx([1.0, 1.5])  # the run store's frame has them
    frame = frame.drop(columns=["speedup", "strong_efficiency", "weak_efficiency", "scaling_group"])
    doubled = pd.concat([frame, frame])  # index 0, 1, 0, 1

    out = add_scaling(doubled)

    assert "speedup" not in doubled.columns
    assert list(out["speedup"]) == pytest.approx([1.0, 1.5, 1.0, 1.5])

