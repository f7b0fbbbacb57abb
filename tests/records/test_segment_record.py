"""A switched run's segments are typed, frozen SegmentRecords (no engines): joined from the
parts a switch ran, read by attribute and still by key as the dicts they were, saved and read
back through the store, and a committed notebook's switched run still reads."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from parakit.config.run import RunConfig
from parakit.records.rank import rank_info
from parakit.records.result import RankInfo, RunResult, SegmentRecord
from parakit.records.segments import join, segment_record, segment_results, segment_rows
from parakit.records.store import read_runs, save_run
from parakit.records.summary import measure
from parakit.records.summary_fields import Summary
from record_helpers import quietly_read, report

SWITCHED = Path(__file__).resolve().parent / "stored-runs" / "08-switch-while-training"


def part(strategy: str, step_s: float) -> RunResult:
    """One segment's launch, measured as a run of its own (4 steps, 1 warm-up)."""
    config = RunConfig(model="mlp", strategy=strategy, workers=2, steps=4, warmup_steps=1, batch_size=8)
    reports = [report(rank=k, losses=[1.0] * 4, step_time_s=[step_s] * 4, measured_wall_s=3 * step_s)
               for k in range(2)]
    ranks = [rank_info(r, rank=k, engine_id=k, pid=k, host="h", device="cpu", device_name="cpu")
             for k, r in enumerate(reports)]
    result = RunResult(run_id=f"part-{strategy}", status="ok", config=config.describe(), world_size=2,
                       backend="gloo", device_names=["cpu", "cpu"], ranks=ranks, started_at="2026-01-01")
    measure(result, config, reports)
    return result


def switched() -> RunResult:
    """ddp for 4 steps, then fsdp for 4, the switch pausing training 0.3 s."""
    ddp, fsdp = part("ddp", 0.1), part("fsdp", 0.2)
    records = [segment_record(0, ddp, 0, None, None, None, None),
               segment_record(1, fsdp, 4, ddp.config, 0.3, 0.1, 0.15)]
    return join([ddp, fsdp], records, "20260101-000000-switch", ddp.config)


def test_a_segment_is_frozen_and_typed_and_still_read_by_key():
    run = switched()
    first, second = run.segments
    assert isinstance(second, SegmentRecord) and isinstance(second.summary, Summary)
    assert (second.first_step, second.last_step, second.label, second.changed) == (4, 7, "fsdp", {"strategy": "fsdp"})
    assert isinstance(second.ranks[0], RankInfo) and second.ranks[0].host == "h"
    # the readers written for the dicts: notebooks, plots/switching.py, benchmarks/switch_cost.py
    assert [(g["first_step"], g["settings"]["strategy"]) for g in run.segments] == [(0, "ddp"), (4, "fsdp")]
    assert second["switch_s"] - second["state_save_s"] - second["state_load_s"] == pytest.approx(0.05)
    assert second["summary"]["samples_per_s"] == pytest.approx(8 / 0.2) and first.get("switch_s") is None
    assert "method" not in second["summary"]  # the words are the run's, said once
    with pytest.raises(dataclasses.FrozenInstanceError):
        second.first_step = 5
    with pytest.raises(TypeError):
        second["label"] = "tensor"


def test_the_joined_run_summarises_every_segment_and_each_keeps_its_own():
    run = switched()
    s = run.summary
    assert s.switches == 1 and s["switch_s"] == pytest.approx(0.3) and s.measured_steps == 6
    assert s.step_time_s == pytest.approx(0.15)  # the median of three 0.1 s and three 0.2 s measured steps
    assert s.wall_samples_per_s == pytest.approx(8 * 6 / (0.3 + 0.6))  # each segment's wall clock, summed
    assert [r.summary.samples_per_s for r in segment_results([run])] == pytest.approx([80.0, 40.0])
    rows = segment_rows([run])
    assert [(r["segment"], r["strategy"], r["switched_to"], r["samples_per_s"]) for r in rows] == [
        (0, "ddp", "start", pytest.approx(80.0)), (1, "fsdp", "fsdp", pytest.approx(40.0))]
    assert [(r["segment"], r["samples_per_s"]) for r in segment_rows([part("ddp", 0.1)])] == [(0, pytest.approx(80.0))]


def test_the_store_keeps_every_segment_field(tmp_path):
    run = switched()
    path = save_run(run, tmp_path)
    written = json.loads(path.read_text())["segments"]
    assert [g["label"] for g in written] == ["start", "fsdp"] and written[1]["ranks"][0]["host"] == "h"
    (loaded,) = quietly_read(tmp_path)
    assert loaded.segments == run.segments and loaded == run
    assert all(isinstance(r, RankInfo) for g in loaded.segments for r in g.ranks)


def test_a_segment_without_the_optional_fields_reads_and_an_unknown_field_is_damage(tmp_path):
    path = save_run(switched(), tmp_path)
    record = json.loads(path.read_text())
    for g in record["segments"]:
        for key in ("changed", "state_save_s", "state_load_s", "unmeasured"):
            del g[key]
    path.write_text(json.dumps(record))
    (loaded,) = quietly_read(tmp_path)
    assert loaded.segments[1].state_save_s is None and loaded.segments[1].changed == {}
    record["segments"][0]["speed"] = "fast"  # a segment's fields are checked as a step's and a rank's are
    path.write_text(json.dumps(record))
    with pytest.warns(UserWarning, match=r"segments\[0\]: unknown field\(s\) 'speed'"):
        assert read_runs(tmp_path) == []


def test_the_committed_switched_run_reads_and_writes_its_segments_as_they_were():
    (run,) = [r for r in quietly_read(SWITCHED) if r.segments]
    stored = json.loads((SWITCHED / f"{run.run_id}.json").read_text())
    assert [g.label for g in run.segments] == [g["label"] for g in stored["segments"]]
    assert run.summary["switches"] == len(run.segments) - 1
    written = run.to_dict()["segments"]
    assert json.dumps(written, sort_keys=True) == json.dumps(stored["segments"], sort_keys=True)
