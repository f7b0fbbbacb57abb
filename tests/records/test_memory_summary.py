"""Memory per rank in the records (no engines): the run's summary of the parts, the reasons for
what is missing, snapshots written beside the run, and run files from before the parts."""

from __future__ import annotations

import json

from parakit.config.run import RunConfig
from parakit.records.rank import rank_info
from parakit.records.result import RunResult
from parakit.records.store import read_runs, save_memory_snapshots, save_run
from parakit.records.summary import measure
from record_helpers import report

CPU = "CPU: no caching allocator"
WHERE = dict(engine_id=0, pid=1, host="h", device="cpu", device_name="cpu")


def measured_run(*reports, snapshot=False) -> RunResult:
    config = RunConfig(model="mlp", strategy="ddp", workers=len(reports), steps=1, warmup_steps=0,
                       batch_size=8, memory_snapshot=snapshot)
    ranks = [rank_info(r, rank=i, **WHERE) for i, r in enumerate(reports)]
    result = RunResult(run_id="20260101-000000-aaaaaa", status="ok", config=config.describe(),
                       world_size=len(reports), backend="gloo", device_names=["cpu"] * len(reports), ranks=ranks)
    measure(result, config, list(reports))
    return result


def cpu_rank(rank, params, activations, **more):
    why = {"reserved_peak_bytes": CPU, "fragmentation": CPU, "allocated_peak_bytes": CPU, **more.pop("why", {})}
    return report(rank=rank, param_bytes=params, gradient_bytes=params, optimizer_bytes=2 * params,
                  activation_bytes=activations, activation_step=0, memory_unmeasured=why, **more)


def test_each_part_is_the_largest_rank_s_and_missing_ones_say_why():
    # a pipeline: the first stage holds more activations, the last more parameters
    result = measured_run(cpu_rank(0, 100, 900), cpu_rank(1, 300, 500))
    s = result.summary
    assert (s["param_bytes"], s["gradient_bytes"], s["optimizer_bytes"], s["activation_bytes"]) == (300, 300, 600, 900)
    assert s["reserved_peak_bytes"] is None and s["fragmentation"] is None
    assert result.unmeasured["reserved_peak_bytes"] == CPU and result.unmeasured["fragmentation"] == CPU
    assert "step 0" in s["method"]["activation_bytes"]
    assert result.ranks[1].activation_bytes == 500  # per rank, beside where it ran


def test_a_part_one_rank_measured_is_kept_and_snapshot_reasons_pass_through():
    late = "the run ended before step 1, the step activations are counted on"
    result = measured_run(cpu_rank(0, 100, None, why={"activation_bytes": late, "memory_snapshot": "CPU: no"}),
                          cpu_rank(1, 100, 700), snapshot=True)
    assert result.summary["activation_bytes"] == 700
    assert "activation_bytes" not in result.unmeasured  # one rank measured it
    assert result.unmeasured["memory_snapshot"] == "CPU: no"

    nobody = measured_run(cpu_rank(0, 100, None, why={"activation_bytes": late}))
    assert nobody.summary["activation_bytes"] is None and nobody.unmeasured["activation_bytes"] == late
    assert "activation_bytes" not in nobody.summary["method"]


def test_snapshots_are_written_beside_the_run_one_per_rank_that_sent_one(tmp_path):
    paths = save_memory_snapshots("run1", [b"\x80rank0", None, b"\x80rank2"], tmp_path)
    assert [p.split("/")[-2:] for p in paths] == [["run1-memory", "rank0.pickle"], ["run1-memory", "rank2.pickle"]]
    assert open(paths[1], "rb").read() == b"\x80rank2"
    assert sorted(p.name for p in (tmp_path / "run1-memory").iterdir()) == ["rank0.pickle", "rank2.pickle"]


def test_a_run_file_from_before_the_memory_parts_still_loads(tmp_path):
    result = measured_run(cpu_rank(0, 100, 900))
    result.memory_snapshots = ["somewhere/rank0.pickle"]
    path = save_run(result, tmp_path)
    old = json.loads(path.read_text())
    del old["memory_snapshots"]
    for rank in old["ranks"]:
        for key in ("gradient_bytes", "activation_bytes", "allocated_peak_bytes", "reserved_peak_bytes",
                    "fragmentation"):
            del rank[key]
    path.write_text(json.dumps(old))
    (loaded,) = read_runs(tmp_path)
    assert loaded.memory_snapshots == []
    assert loaded.ranks[0].activation_bytes is None and loaded.ranks[0].gradient_bytes is None
    assert loaded.ranks[0].param_bytes == 100
