"""A run's summary is a typed, frozen Summary (no engines): read by attribute, still read by key
as the dict it was, saved and read back through the store with every figure, and run files
from older parakits (figures missing, figures no longer known) still read."""

from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path

import pytest

from parakit.config.run import RunConfig
from parakit.records.rank import rank_info
from parakit.records.result import RunResult
from parakit.records.store import read_runs, runs_frame, save_run
from parakit.records.summary import measure
from parakit.records.summary_fields import InstrumentOverhead, Summary
from record_helpers import quietly_read, report

# Runs the notebooks wrote (2026-12-06), one per notebook and a switched one, kept as they were
# stored: each must read and write back unchanged, whatever the code now calls their fields.
STORED_RUNS = Path(__file__).resolve().parent / "stored-runs"
FIELDS = [f.name for f in dataclasses.fields(Summary) if f.name != "extra"]
STORED = [Summary.STORED_AS.get(name, name) for name in FIELDS]  # the keys: JSON's and the view's


def measured_run(*, steps=6, **figures) -> RunResult:
    """A two-rank CPU run measured from hand-built reports, as the session measures one."""
    config = RunConfig(model="mlp", strategy="ddp", workers=2, steps=steps, warmup_steps=2, batch_size=8)
    reports = [report(rank=k, losses=[2.0 - 0.1 * i for i in range(steps)], step_time_s=[0.1] * steps,
                      measured_wall_s=0.5, **figures) for k in range(2)]
    ranks = [rank_info(r, rank=k, engine_id=k, pid=k, host="h", device="cpu", device_name="cpu")
             for k, r in enumerate(reports)]
    result = RunResult(run_id="20260101-000000-aaaaaa", status="ok", config=config.describe(), world_size=2,
                       backend="gloo", device_names=["cpu", "cpu"], ranks=ranks, started_at="2026-01-01")
    measure(result, config, reports)
    return result


def every_figure_set() -> Summary:
    """A Summary with every field holding a value of its type, each a different one."""
    hints = typing.get_type_hints(Summary)
    values = {}
    for i, name in enumerate(FIELDS):
        kind = next(t for t in typing.get_args(hints[name]) if t is not type(None))
        kind = typing.get_origin(kind) or kind
        values[name] = {float: 0.5 + i, int: i, bool: True, str: f"text {i}", list: [f"layer {i}"],
                        dict: {"figure": f"words {i}"},
                        InstrumentOverhead: InstrumentOverhead(recorded_steps=i, recorded_step_slowdown=0.25,
                                                               profiler_on_steps=[3, 4], method="counted")}[kind]
    return Summary(**values)


def test_a_measured_summary_is_frozen_and_typed():
    s = measured_run().summary
    assert isinstance(s, Summary) and isinstance(s.instrument_overhead, InstrumentOverhead)
    assert s.measured_steps == 4 and s.samples_per_s == pytest.approx(8 / 0.1)
    assert s.wall_samples_per_s == pytest.approx(8 * 4 / 0.5)
    assert s.instrument_overhead.recorded_steps == 0 and "step_time_s" in s.method
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.samples_per_s = 1.0
    with pytest.raises(TypeError):  # no item assignment: a new figure is a new Summary
        s["samples_per_s"] = 1.0
    assert not hasattr(s, "update") and not hasattr(s, "setdefault") and not hasattr(s, "pop")
    changed = dataclasses.replace(s, samples_per_s=1.0)
    assert changed["samples_per_s"] == 1.0 and s["samples_per_s"] == pytest.approx(80.0)


def test_the_mapping_view_is_the_attributes_under_their_stored_names():
    s = every_figure_set()
    assert list(s) == STORED
    for name, key in zip(FIELDS, STORED):
        assert s[key] is getattr(s, name) and s.get(key) is getattr(s, name) and key in s
    # the one figure renamed to carry its unit is still read, and stored, by its old name
    assert s["power_sampler_overhead"] == s.power_sampler_cpu_share and "power_sampler_cpu_share" not in s
    assert dict(s) == {key: s[key] for key in s} and s == dict(s) and len(s) == len(FIELDS)
    assert s["instrument_overhead"]["recorded_step_slowdown"] == 0.25  # nested, read by key too


def test_a_figure_that_could_not_be_measured_is_none_and_one_that_does_not_apply_is_no_key():
    s = measured_run().summary
    assert s["compute_time_s"] is None and s.get("energy_j") is None and "peak_mem_bytes" in s
    # only under fp8 are there converted layers; only a switched run has switches
    assert "fp8_layers" not in s and s.get("fp8_layers") is None and s.fp8_layers is None
    with pytest.raises(KeyError):
        s["switches"]
    assert measured_run(fp8_layers=["blocks.0.0"]).summary["fp8_layers"] == ["blocks.0.0"]


def test_a_run_that_measured_no_step_has_an_empty_summary():
    failed = RunResult(run_id="x", status="failed", config={}, world_size=1, backend=None, device_names=["cpu"])
    assert not failed.summary and len(failed.summary) == 0 and dict(failed.summary) == {} and failed.summary == {}
    assert failed.summary.get("samples_per_s") is None and failed.summary.samples_per_s is None
    with pytest.raises(KeyError):
        failed.summary["samples_per_s"]
    assert failed.to_dict()["summary"] == {}  # a failed run's file reads as before


def test_a_dict_is_refused_where_a_summary_belongs():
    with pytest.raises(TypeError, match="Summary.from_dict"):
        RunResult(run_id="x", status="ok", config={}, world_size=1, backend=None, device_names=["cpu"],
                  summary={"samples_per_s": 1.0})


def test_the_store_keeps_every_figure_under_its_stored_name(tmp_path):
    run = measured_run()
    run.summary = dataclasses.replace(every_figure_set(), extra={"a figure from a newer parakit": 7})
    path = save_run(run, tmp_path)
    written = json.loads(path.read_text())["summary"]
    assert set(written) == {*STORED, "a figure from a newer parakit"}
    assert written["power_sampler_overhead"] == run.summary.power_sampler_cpu_share
    assert written["instrument_overhead"]["profiler_on_steps"] == [3, 4]
    (loaded,) = quietly_read(tmp_path)
    assert loaded.summary == run.summary and loaded == run
    assert all(getattr(loaded.summary, n) == getattr(run.summary, n) for n in FIELDS)
    assert isinstance(loaded.summary.instrument_overhead, InstrumentOverhead)
    assert loaded.summary["a figure from a newer parakit"] == 7


def test_an_old_run_file_without_the_new_figures_and_with_gone_ones_still_reads(tmp_path):
    path = save_run(measured_run(), tmp_path)
    old = json.loads(path.read_text())
    for key in ("samples_per_s_low", "samples_per_s_high", "within_run_sd", "timed_steps", "other_cpu_s",
                "other_cpu_share", "busiest_host", "instrument_overhead"):
        del old["summary"][key]
    old["summary"]["a figure parakit no longer has"] = 0.5
    path.write_text(json.dumps(old))
    (loaded,) = quietly_read(tmp_path)
    s = loaded.summary
    assert s.samples_per_s_low is None and s["within_run_sd"] is None and s.instrument_overhead is None
    assert s.samples_per_s == pytest.approx(80.0)
    assert s.extra == {"a figure parakit no longer has": 0.5} and s["a figure parakit no longer has"] == 0.5
    assert runs_frame([loaded]).loc[0, "a figure parakit no longer has"] == 0.5
    save_run(loaded, tmp_path)  # read and saved again: the unknown figure is kept
    assert json.loads(path.read_text())["summary"]["a figure parakit no longer has"] == 0.5


def test_a_summary_whose_parts_are_damaged_is_skipped_with_a_warning(tmp_path):
    path = save_run(measured_run(), tmp_path)
    damaged = json.loads(path.read_text())
    damaged["summary"]["instrument_overhead"] = "fast"
    path.write_text(json.dumps(damaged))
    with pytest.warns(UserWarning, match="skipped damaged run file"):
        assert read_runs(tmp_path) == []


def test_every_committed_notebook_run_reads_and_keeps_its_figures():
    folders = [p for p in sorted(STORED_RUNS.iterdir()) if p.is_dir()]
    runs = {r.run_id: (folder, r) for folder in folders for r in quietly_read(folder)}
    assert len(runs) >= 10  # the notebooks' outputs, one per notebook and a switched run
    for run_id, (folder, run) in runs.items():
        stored = json.loads((folder / f"{run_id}.json").read_text())
        assert isinstance(run.summary, Summary)
        assert run.device_names == stored["device"] and run.to_dict()["device_names"] == stored["device"]  # renamed in 0.2
        written = run.to_dict()["summary"]
        kept = {k: written[k] for k in stored["summary"]}
        assert json.dumps(kept, sort_keys=True) == json.dumps(stored["summary"], sort_keys=True), run_id  # NaN too
        assert set(written) - set(stored["summary"]) <= set(STORED)  # only figures it lacked, as None
