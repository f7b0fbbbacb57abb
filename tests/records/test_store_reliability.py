"""The run store loses nothing, for real: two processes writing into one folder, a crash between
write and rename, damaged and odd files skipped with a warning naming them, and a run file is data,
never code. (A client killed mid-run, in tests/session/test_reliability.py.)"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys

import pytest

import parakit
from parakit.records.commbench import CommBenchResult
from parakit.records.result import RankInfo, RunResult, StepRecord
from parakit.records.store import read_comm_benches, read_runs, runs_frame, save_comm_bench, save_run
from parakit.records.summary_fields import Summary

from record_helpers import quietly_read

ENV = {**os.environ, "PYTHONWARNINGS": "ignore::DeprecationWarning"}


def a_run(run_id: str = "20261123-000000-aaaaaa", **changes) -> RunResult:
    run = RunResult(
        run_id=run_id, status="ok", config={"strategy": "ddp", "model": "mlp", "workers": 2, "batch_size": 8},
        world_size=2, backend="gloo", device_names=["cpu", "cpu"],
        steps=[StepRecord(step=0, loss=2.0, step_time_s=0.01, rank_step_time_s=[0.01, 0.009], warmup=False)],
        summary=Summary(step_time_s=0.01, samples_per_s=800.0),
        ranks=[RankInfo(rank=0, engine_id=0, pid=1, host="h", device="cpu", device_name="cpu")],
        started_at=run_id,
    )
    for key, value in changes.items():
        setattr(run, key, value)
    return run


# -- nothing lost: the store -------------------------------------------------------------------
WRITER = """
import os, sys, time
from parakit.records.result import RunResult
from parakit.records.store import save_run
who, folder, go = sys.argv[1:]
while not os.path.exists(go):  # both writers start saving at the same moment
    time.sleep(0.001)
for i in range(50):
    run_id = f"20261123-000000-{who}{i:03d}"
    save_run(RunResult(run_id=run_id, status="ok", config={"workers": 1, "batch_size": 8}, world_size=1,
                       backend=None, device_names=["cpu"], started_at=run_id), folder)
"""


def test_two_processes_saving_into_one_folder_lose_nothing(tmp_path):
    folder, go = tmp_path / "runs", tmp_path / "go"
    writers = {}
    for who in "ab":
        with open(tmp_path / f"{who}.err", "w") as err:
            writers[who] = subprocess.Popen([sys.executable, "-c", WRITER, who, str(folder), str(go)], env=ENV,
                                            stderr=err)
    go.touch()
    while any(w.poll() is None for w in writers.values()):
        quietly_read(folder)  # a reader meanwhile never sees half a file
    for who, w in writers.items():
        assert w.wait(60) == 0, (tmp_path / f"{who}.err").read_text()
    runs = quietly_read(folder)
    assert len({r.run_id for r in runs}) == 100
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"{r.run_id}.json" for r in runs)  # no temp file left


def test_a_crash_between_write_and_rename_leaves_no_half_file(tmp_path):
    crash = """
import os, sys
from parakit.records import store
from parakit.records.result import RunResult
def run(run_id):
    return RunResult(run_id=run_id, status="ok", config={}, world_size=1, backend=None, device_names=["cpu"],
                     started_at=run_id)
store.save_run(run("20261123-000000-first"), sys.argv[1])
store.os.replace = lambda *args: os._exit(9)  # the process dies after the write, before the rename
store.save_run(run("20261123-000001-second"), sys.argv[1])
"""
    done = subprocess.run([sys.executable, "-c", crash, str(tmp_path)], env=ENV, capture_output=True, text=True)
    assert done.returncode == 9, done.stderr
    assert [r.run_id for r in quietly_read(tmp_path)] == ["20261123-000000-first"]
    (leftover,) = [p.name for p in tmp_path.iterdir() if p.suffix == ".tmp"]
    assert leftover.startswith(".20261123-000001-second.")  # a hidden temp file, never read as a run


def named(caught) -> list[str]:
    """The file names the warnings name, sorted."""
    return sorted(os.path.basename(str(w.message).split(": ")[1].rsplit(" ", 1)[1]) for w in caught)


def write(path, text: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.write_bytes if isinstance(text, bytes) else path.write_text)(text)


GOOD = a_run().to_dict()
DAMAGED = {
    "cut short": json.dumps(GOOD)[:200],
    "empty": "",
    "a JSON list": "[1, 2, 3]",
    "a list of pairs": json.dumps([[k, v] for k, v in GOOD.items()]),  # dict() would take it
    "a JSON string": '"run"',
    "null": "null",
    "wrong keys": json.dumps({"id": "x", "result": "ok"}),
    "an unknown key": json.dumps({**GOOD, "extra": 1}),
    "a missing key": json.dumps({k: v for k, v in GOOD.items() if k != "status"}),
    "config as a list": json.dumps({**GOOD, "config": []}),
    "started_at null": json.dumps({**GOOD, "started_at": None}),
    "summary as text": json.dumps({**GOOD, "summary": "fast"}),
    "a step that is a number": json.dumps({**GOOD, "steps": [1]}),
    "a step with a text loss": json.dumps({**GOOD, "steps": [{**GOOD["steps"][0], "loss": "low"}]}),
    "a rank without a pid": json.dumps({**GOOD, "ranks": [{k: v for k, v in GOOD["ranks"][0].items() if k != "pid"}]}),
    "workers as text": json.dumps({**GOOD, "config": {**GOOD["config"], "workers": "two"}}),
    "binary": bytes(range(256)),
    "a pickle": pickle.dumps(GOOD),
}


@pytest.mark.parametrize("damage", list(DAMAGED))
def test_a_damaged_run_file_is_skipped_with_a_warning_naming_it(tmp_path, damage):
    save_run(a_run("20261123-000000-good"), tmp_path)
    bad = tmp_path / "20261123-000001-bad.json"
    write(bad, DAMAGED[damage])
    with pytest.warns(UserWarning) as caught:
        runs = read_runs(tmp_path)
    assert [r.run_id for r in runs] == ["20261123-000000-good"]
    (message,) = [str(w.message) for w in caught]
    assert message.startswith(f"parakit: skipped damaged run file {bad}: ") and "\n" not in message
    with pytest.warns(UserWarning, match="20261123-000001-bad.json"):
        frame = parakit.load_runs(tmp_path)
    assert list(frame["run_id"]) == ["20261123-000000-good"]


def test_things_that_are_not_files_are_skipped_too(tmp_path):
    save_run(a_run("20261123-000000-good"), tmp_path)
    (tmp_path / "a-folder.json").mkdir()
    os.mkfifo(tmp_path / "a-fifo.json")  # reading it would block for ever
    with pytest.warns(UserWarning) as caught:
        runs = read_runs(tmp_path)
    assert [r.run_id for r in runs] == ["20261123-000000-good"]
    assert named(caught) == ["a-fifo.json", "a-folder.json"]


def test_a_damaged_benchmark_file_is_skipped_with_a_warning_naming_it(tmp_path):
    good = CommBenchResult(bench_id="comm-20261123-000000-good", status="ok", world_size=2, backend="gloo",
                           device_names=["cpu", "cpu"], started_at="2026-11-23")
    save_comm_bench(good, tmp_path)
    folder = tmp_path / "comm-bench"
    write(folder / "cut.json", json.dumps(good.to_dict())[:50])
    write(folder / "list.json", "[]")
    write(folder / "rows.json", json.dumps({**good.to_dict(), "rows": {"all_reduce": 1}}))
    with pytest.warns(UserWarning) as caught:
        benches = read_comm_benches(tmp_path)
    assert [b.bench_id for b in benches] == [good.bench_id]
    assert named(caught) == ["cut.json", "list.json", "rows.json"]


class RunsCode:
    """Unpickling this would run a command: what a pickled "run" from a stranger can do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_run_file_is_data_never_code(tmp_path):
    marker = tmp_path / "code-ran"
    runs = tmp_path / "runs"
    save_run(a_run("20261123-000000-good"), runs)
    write(runs / "20261123-000001-pickle.json", pickle.dumps(RunsCode(marker), protocol=0))  # text, parses as nothing
    write(runs / "20261123-000002-pickle.json", pickle.dumps(RunsCode(marker)))
    write(runs / "20261123-000003-reduce.json", json.dumps({**GOOD, "__reduce__": ["os.system", [f"touch {marker}"]]}))
    jsonpickle = {"py/reduce": [{"py/function": "os.system"}, {"py/tuple": [f"touch {marker}"]}]}
    write(runs / "20261123-000004-jsonpickle.json", json.dumps(jsonpickle))
    payload = {"py/object": "os.system", "__reduce__": ["os.system", [f"touch {marker}"]]}
    save_run(a_run("20261123-000005-config", config={**GOOD["config"], "model_options": payload}), runs)
    with pytest.warns(UserWarning) as caught:
        loaded = read_runs(runs)
        frame = runs_frame(loaded)
    assert len(caught) == 4 and all("skipped damaged run file" in str(w.message) for w in caught)
    assert [r.run_id for r in loaded] == ["20261123-000000-good", "20261123-000005-config"]
    assert loaded[1].config["model_options"] == payload  # kept as plain data
    assert len(frame) == 2
    assert not marker.exists()
