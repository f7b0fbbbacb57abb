"""The communication benchmark from the session, the CLI and the store: settings checked before
any engine is touched, a real run on 2 CPU engines, saved and drawn."""

from __future__ import annotations

import subprocess
import sys

import pytest

from parakit.config.bench import CPU_MAX_BYTES, bench_settings, parse_size
from parakit.config.formulas import bus_factor
from parakit.frontends.text import bench_table
from parakit.plots.measures import comm_bandwidth
from parakit.records.store import read_comm_benches


@pytest.mark.parametrize("text, expected", [
    (4096, 4096), ("4096", 4096), ("64KB", 64 * 1024), ("16 MB", 16 * 2**20), ("1GiB", 2**30), ("0.5KB", 512),
])
def test_sizes_read_as_people_write_them(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("settings, message", [
    (dict(world=1), "needs workers >= 2"),
    (dict(collectives=["allreduce"]), "unknown collective 'allreduce'; use any of: all_reduce"),
    (dict(sizes=["12 parsecs"]), "a message size must be a positive number of bytes"),
    (dict(sizes=[0]), "a message size must be a positive number of bytes"),
    (dict(repeats=0), "repeats must be an integer >= 1"),
    (dict(dtype="float64"), "dtype must be one of float32, float16, bfloat16"),
    (dict(sizes=["1MB"], max_size="64KB"), "no message size is at most max_size='64KB'"),
])
def test_bad_settings_are_one_line_errors(settings, message):
    base = dict(world=2, sizes=None, collectives=None, repeats=3, warmup=1, max_size=None, dtype="float32", gpus=[])
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")) as e:
        bench_settings(**{**base, **settings})
    assert "\n" not in str(e.value)


def test_cpu_engines_stop_at_64_mb_unless_asked():
    sizes = bench_settings(2, None, None, 3, 1, None, "float32", gpus=[])["sizes_bytes"]
    assert max(sizes) == CPU_MAX_BYTES and min(sizes) == 1024
    assert max(bench_settings(2, None, None, 3, 1, None, "float32", gpus=[0])["sizes_bytes"]) == 256 * 2**20


def test_bench_checks_settings_before_touching_engines(session):
    pids = session._engines.pids()
    with pytest.raises(ValueError, match="unknown collective"):
        session.bench_comm(workers=2, collectives=["gossip"])
    with pytest.raises(ValueError, match="needs workers >= 2"):
        session.bench_comm(workers=1)
    assert session._engines.pids() == pids and not session.comm_benches()


def test_bench_on_two_cpu_engines_measures_saves_and_draws(session):
    seen = []
    b = session.bench_comm(workers=2, sizes=["1KB", "64KB", "1MB"], repeats=3, warmup=1, on_progress=seen.append)
    assert b.ok, b.error
    assert b.backend == "gloo" and b.world_size == 2
    measured = {r["collective"] for r in b.rows}
    assert measured == {"all_reduce", "all_gather", "broadcast", "send_recv"}
    assert "all_reduce" in b.skipped["reduce_scatter"]  # gloo's is an all-reduce in disguise: not measured
    for r in b.rows:
        assert r["time_s"] > 0 and r["busbw_gbps"] == pytest.approx(r["algbw_gbps"] * bus_factor(r["collective"], 2))
    assert {r["bytes"] for r in b.rows if r["collective"] == "all_reduce"} == {1024, 64 * 1024, 2**20}
    assert set(b.fits) == measured
    assert seen and seen[-1]["done"] <= seen[-1]["total"]  # rank 0's progress reached us

    assert [x.bench_id for x in read_comm_benches(session.runs_dir)] == [b.bench_id]
    fig = comm_bandwidth([b])
    assert len(fig.data) == 4 and fig.layout.xaxis.type == "log"
    all_reduce = next(t for t in fig.data if t.name.startswith("all_reduce"))
    assert list(all_reduce.x) == [1024, 65536, 1048576]
    table = bench_table(b)
    assert "all_reduce" in table and "skipped reduce_scatter" in table

    after = session.run(strategy="ddp", workers=2, steps=3, batch_size=8)  # the engines are fine after
    assert after.ok, after.error


def test_cli_bench_refuses_bad_input_in_one_line():
    done = subprocess.run([sys.executable, "-m", "parakit", "bench", "comm", "--workers", "1"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip() == "parakit: error: the communication benchmark needs workers >= 2 (got 1)"
