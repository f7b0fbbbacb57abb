"""The run store: atomic JSON files, a DataFrame view, damaged files skipped with a warning."""

import json

import pytest

import parakit
from parakit.records.result import RankInfo, RunResult, StepRecord
from parakit.records.store import read_runs, save_run
from parakit.records.summary_fields import Summary


def make_run(run_id="20260101-000000-aaaaaa", status="ok", loss=2.0):
    return RunResult(
        run_id=run_id, status=status, config={"strategy": "ddp", "model": "mlp", "workers": 2},
        world_size=2, backend="gloo", device_names=["cpu", "cpu"],
        steps=[StepRecord(step=0, loss=loss, step_time_s=0.01, rank_step_time_s=[0.01, 0.009], warmup=True)],
        summary=Summary(step_time_s=0.01, samples_per_s=6400.0, peak_mem_bytes=None),
        ranks=[RankInfo(rank=0, engine_id=0, pid=1, host="h", device="cpu", device_name="cpu")],
        started_at=run_id, unmeasured={"peak_mem_bytes": "no /proc on this OS"},
    )


def test_round_trip_keeps_every_field(tmp_path):
    run = make_run()
    path = save_run(run, tmp_path)
    assert path.name == f"{run.run_id}.json"
    (loaded,) = read_runs(tmp_path)
    assert loaded == run
    assert loaded.summary["peak_mem_bytes"] is None  # unmeasured stays null, not 0
    assert json.loads(path.read_text())["unmeasured"]["peak_mem_bytes"] == "no /proc on this OS"


def test_write_is_atomic_and_leaves_no_temp_files(tmp_path, monkeypatch):
    save_run(make_run(), tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["20260101-000000-aaaaaa.json"]

    def broken_dump(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(json, "dump", broken_dump)
    with pytest.raises(OSError):
        save_run(make_run(run_id="20260101-000001-bbbbbb"), tmp_path)
    # the failed write left neither a partial run file nor its temp file
    assert [p.name for p in tmp_path.iterdir()] == ["20260101-000000-aaaaaa.json"]


def test_load_runs_gives_a_dataframe_and_skips_damaged_files(tmp_path):
    save_run(make_run("20260101-000000-aaaaaa", loss=2.0), tmp_path)
    save_run(make_run("20260101-000002-cccccc", status="failed"), tmp_path)
    (tmp_path / "20260101-000001-broken.json").write_text('{"run_id": "x", "status": ')
    with pytest.warns(UserWarning, match="20260101-000001-broken.json"):
        frame = parakit.load_runs(tmp_path)
    assert list(frame["run_id"]) == ["20260101-000000-aaaaaa", "20260101-000002-cccccc"]
    assert list(frame["status"]) == ["ok", "failed"]
    assert frame.loc[0, "samples_per_s"] == 6400.0
    assert frame.loc[0, "strategy"] == "ddp"


def test_empty_or_missing_folder_is_an_empty_frame(tmp_path):
    assert len(parakit.load_runs(tmp_path / "nothing-here")) == 0
