"""Plots and the HTML report, from hand-built RunResults (plain data, no engines)."""

from __future__ import annotations

import ast
import math
from dataclasses import replace
from pathlib import Path

import plotly.offline
import pytest

from parakit.frontends import report
from parakit.plots import runs as plots
from parakit.records.result import FAILED, OK, STOPPED, RankInfo, RunResult, SegmentRecord, StepRecord
from parakit.records.summary_fields import Summary

BATCH = 64


def make_run(run_id, workers, samples_per_s, *, strategy=None, model="mlp", batch=BATCH,
             status=OK, mem=None, losses=None, warmup=2, error=None):
    """A RunResult as the session would record it; failed/stopped runs have no steps/summary."""
    strategy = strategy or ("single" if workers == 1 else "ddp")
    mem = mem if mem is not None else [100 * 2**20] * workers
    ranks = [RankInfo(rank=i, engine_id=i, pid=1000 + i, host="box", device="cpu",
                      device_name="Test CPU", peak_mem_bytes=m, peak_mem_kind="process_peak_rss")
             for i, m in enumerate(mem)]
    config = {"model": model, "model_options": {}, "strategy": strategy, "workers": workers,
              "batch_size": batch, "warmup_steps": warmup}
    run = RunResult(run_id=run_id, status=status, config=config, world_size=workers,
                    backend="gloo", device_names=["Test CPU"] * workers, ranks=ranks, error=error)
    if status != OK:
        return run
    step_s = batch / samples_per_s
    losses = losses or [2.0 - 0.1 * i for i in range(6)]
    run.steps = [StepRecord(step=i, loss=v, step_time_s=step_s,
                            rank_step_time_s=[step_s] * workers, warmup=i < warmup)
                 for i, v in enumerate(losses)]
    peaks = [m for m in mem if m is not None]
    run.summary = Summary(step_time_s=step_s, samples_per_s=samples_per_s, loss_first=losses[0],
                          loss_last=losses[-1], peak_mem_bytes=max(peaks, default=None))
    return run


@pytest.fixture
def runs():
    return [
        make_run("r1", 1, 100.0),
        make_run("r2", 2, 180.0),
        make_run("r4", 4, 320.0),
        make_run("bad", 2, 0, status=FAILED, error="rank 1: <script>alert('x')</script> & boom"),
    ]


def row(table, run_id):
    return table.set_index("run_id").loc[run_id]


def test_speedup_table_numbers(runs):
    table = plots.speedup_table(runs)
    assert list(table.columns) == plots.TABLE_COLUMNS
    assert list(table["run_id"]) == ["r1", "r2", "r4"]  # the failed run is not a row
    assert row(table, "r2")["speedup"] == pytest.approx(1.8)
    assert row(table, "r2")["efficiency"] == pytest.approx(0.9)
    assert row(table, "r4")["speedup"] == pytest.approx(3.2)
    assert row(table, "r4")["efficiency"] == pytest.approx(0.8)
    assert row(table, "r1")["speedup"] == pytest.approx(1.0)
    assert row(table, "r2")["step_time_ms"] == pytest.approx(1e3 * BATCH / 180.0)


def test_baseline_is_same_model_and_batch_size():
    results = [make_run("mlp1", 1, 100.0), make_run("gpt1", 1, 10.0, model="gpt"),
               make_run("gpt2", 2, 15.0, model="gpt"), make_run("mlp2-b96", 2, 300.0, batch=96)]
    table = plots.speedup_table(results)
    assert row(table, "gpt2")["speedup"] == pytest.approx(1.5)
    # No 1-worker run at batch 96 (nor at 48 per worker): no speed-up, and NaN rather than an
    # invented 0 or 1; the table names the run that is missing.
    assert math.isnan(row(table, "mlp2-b96")["speedup"])
    assert math.isnan(row(table, "mlp2-b96")["efficiency"])
    assert "a 1-worker ddp (or single) run" in row(table, "mlp2-b96")["missing_baseline"]


def test_a_run_twice_the_batch_on_twice_the_workers_is_weak_scaling():
    table = plots.speedup_table([make_run("mlp1", 1, 100.0), make_run("mlp2-b128", 2, 300.0, batch=128)])
    assert row(table, "mlp2-b128")["speedup"] == pytest.approx(3.0)
    assert row(table, "mlp2-b128")["scaling_group"].startswith("weak:")


def test_same_strategy_preferred_over_single_as_baseline():
    results = [make_run("ddp1", 1, 90.0, strategy="ddp"), make_run("single", 1, 100.0),
               make_run("r2", 2, 180.0)]
    assert row(plots.speedup_table(results), "r2")["speedup"] == pytest.approx(2.0)


def test_a_bf16_run_is_never_compared_with_an_fp32_baseline():
    fp32, bf16 = make_run("fp32-1", 1, 100.0), make_run("bf16-2", 2, 300.0)
    bf16.config["precision"], fp32.config["precision"] = "bf16", "fp32"
    table = plots.speedup_table([fp32, bf16])
    assert math.isnan(row(table, "bf16-2")["speedup"])
    bf16_one = make_run("bf16-1", 1, 160.0)
    bf16_one.config["precision"] = "bf16"
    assert row(plots.speedup_table([fp32, bf16, bf16_one]), "bf16-2")["speedup"] == pytest.approx(300 / 160)


def test_explicit_baseline(runs):
    table = plots.speedup_table(runs, baseline=runs[1])
    assert row(table, "r4")["speedup"] == pytest.approx(320 / 180)
    # efficiency per worker added: r4 has 4 workers, its baseline r2 has 2
    assert row(table, "r4")["efficiency"] == pytest.approx(320 / 180 * 2 / 4)
    assert row(table, "r4")["verdict"] in ("faster", "no measurable difference")
    assert row(table, "r4")["speedup_low"] < row(table, "r4")["speedup"] < row(table, "r4")["speedup_high"]
    with pytest.raises(ValueError, match="completed run"):
        plots.speedup_table(runs, baseline=runs[3])


def test_speedup_figure_matches_table_and_has_ideal_line(runs):
    fig = plots.speedup(runs)
    lines = [t for t in fig.data if t.name != "ideal (linear)"]
    assert sorted(t.name for t in lines) == ["ddp, mlp, batch 64", "single, mlp, batch 64"]
    drawn = {x: y for t in lines for x, y in zip(t.x, t.y)}
    table = plots.speedup_table(runs)
    assert drawn == pytest.approx(dict(zip(table["workers"], table["speedup"])))
    ideal = next(t for t in fig.data if t.name == "ideal (linear)")
    assert ideal.line.dash == "dash"
    assert list(ideal.x) == list(ideal.y) == [1, 4]
    assert "1 run skipped" in fig.layout.title.subtitle.text
    assert fig.layout.template.layout.paper_bgcolor == "white"


def test_speedup_without_one_worker_run_raises():
    with pytest.raises(ValueError, match=r"no 1-worker baseline: add a 1-worker ddp \(or single\) run"):
        plots.speedup([make_run("r2", 2, 180.0), make_run("r4", 4, 320.0)])
    with pytest.raises(ValueError, match="include a 1-worker run"):
        plots.speedup([make_run("x", 1, 0, status=STOPPED)])


def test_failed_runs_are_skipped_everywhere(runs):
    for draw in (plots.throughput, plots.loss, plots.step_times, plots.memory):
        fig = draw(runs)
        names = " ".join(str(t.name) for t in fig.data)
        xs = [x for t in fig.data for x in (t.x or [])]
        assert "bad" not in names and "bad" not in xs, draw.__name__
        assert "1 run skipped" in fig.layout.title.subtitle.text, draw.__name__


def test_throughput_bars_and_labels(runs):
    fig = plots.throughput(runs)
    (bars,) = fig.data
    assert list(bars.y) == [100.0, 180.0, 320.0]
    assert list(fig.layout.xaxis.ticktext) == ["single x1 mlp", "ddp x2 mlp", "ddp x4 mlp"]
    assert "run %{customdata[0]}" in bars.hovertemplate


def test_duplicate_labels_stay_separate_bars():
    fig = plots.throughput([make_run("a", 2, 180.0), make_run("b", 2, 190.0)])
    assert list(fig.data[0].x) == ["a", "b"]
    assert list(fig.layout.xaxis.ticktext) == ["ddp x2 mlp (a)", "ddp x2 mlp (b)"]


def test_loss_gaps_and_warmup():
    run = make_run("r1", 1, 100.0, losses=[2.0, 1.9, None, 1.7], warmup=2)
    fig = plots.loss([run])
    (line,) = fig.data
    assert list(line.y) == [2.0, 1.9, None, 1.7]  # a missing loss is a gap, not 0
    assert list(line.marker.opacity) == [0.35, 0.35, 1.0, 1.0]
    (shade,) = fig.layout.shapes
    assert (shade.x0, shade.x1) == (-0.5, 1.5)


def test_step_times_in_ms(runs):
    fig = plots.step_times(runs)
    assert fig.data[0].y[0] == pytest.approx(1e3 * BATCH / 100.0)
    assert fig.layout.yaxis.title.text == "step time (ms)"
    assert any(s.fillcolor == "gray" for s in fig.layout.shapes)  # warm-up shaded


def test_memory_omits_unmeasured_ranks():
    runs = [make_run("r2", 2, 180.0, mem=[200 * 2**20, None]),
            make_run("r4", 4, 320.0, mem=[None] * 4)]
    fig = plots.memory(runs)
    (peak,) = [t for t in fig.data if t.type == "scatter"]
    assert list(peak.y) == [200.0] and peak.name == "peak (process peak RSS)"  # None is not drawn as 0
    assert list(peak.x[1]) == ["rank 0"]
    assert all(list(t.y) == [None] for t in fig.data if t.type == "bar")  # no part measured: no bar
    note = fig.layout.title.subtitle.text
    assert "5 ranks measured nothing" in note and "1 run skipped" in note
    assert "activations not measured on 1 rank" in note
    assert fig.layout.yaxis.title.text == "memory (MiB)"


def test_memory_stacks_the_parts_per_rank_under_the_peak():
    run = make_run("a", 2, 180.0, mem=[300 * 2**20, 310 * 2**20])
    for rank, params in zip(run.ranks, (4, 2)):
        rank.param_bytes, rank.gradient_bytes = params * 2**20, params * 2**20
        rank.optimizer_bytes, rank.activation_bytes = 2 * params * 2**20, 10 * 2**20
    run.ranks[1].activation_bytes = None  # one part a rank did not measure
    gpu = make_run("g", 1, 100.0, mem=[50 * 2**20], strategy="fsdp")
    gpu.ranks[0].param_bytes, gpu.ranks[0].reserved_peak_bytes, gpu.ranks[0].fragmentation = 2**20, 64 * 2**20, 0.2
    gpu.ranks[0].peak_mem_kind = "cuda_max_allocated"
    fig = plots.memory([run, gpu])
    bars = {t.name: list(t.y) for t in fig.data if t.type == "bar"}
    assert bars == {"parameters": [4.0, 2.0, 1.0], "gradients": [4.0, 2.0, None],
                    "optimizer state": [8.0, 4.0, None], "activations": [10.0, None, None]}
    assert fig.layout.barmode == "stack"
    # one bar per (run, rank), on a two-level axis
    (first,) = {tuple(t.x[0]) for t in fig.data}
    assert first == ("ddp x2 mlp", "ddp x2 mlp", "fsdp x1 mlp")
    gpu_peak, cpu_peak, reserved = [t for t in fig.data if t.type == "scatter"]
    assert list(gpu_peak.y) == [None, None, 50.0] and gpu_peak.visible is True
    assert list(cpu_peak.y) == [300.0, 310.0, None]
    assert cpu_peak.visible == "legendonly"  # the whole process's peak would flatten the parts
    assert list(reserved.y) == [None, None, 64.0] and reserved.customdata[2][5] == 0.2
    note = fig.layout.title.subtitle.text
    assert "activations not measured on 2 ranks" in note and "gradients not measured on 1 rank" in note


def test_empty_input_gives_empty_figures():
    for draw in (plots.throughput, plots.loss, plots.step_times, plots.memory):
        assert all(len(t.x or []) == 0 for t in draw([]).data)


def test_report_is_self_contained_and_escaped(tmp_path, runs):
    out = report.write_report(runs, tmp_path / "sub" / "report.html", title="a <b> title")
    html = out.read_text(encoding="utf-8")
    bundle_head = plotly.offline.get_plotlyjs()[:200]
    assert html.count(bundle_head) == 1  # plotly.js inlined exactly once
    assert "<script src=" not in html and 'src="https://cdn.plot.ly' not in html
    assert html.count("Plotly.newPlot(") == len(report._FIGURES)  # speed-up ... breakdown, power, memory
    assert "<h2>Where the time went</h2>" in html and "no time breakdown" in html  # a sentence per ok run
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; boom" in html
    assert "<script>alert(" not in html
    assert "a &lt;b&gt; title" in html
    assert "Test CPU" in html and "box" in html
    assert "<table" in html and "1.80x" in html and "90%" in html
    assert sorted(p.name for p in out.parent.iterdir()) == ["report.html"]  # no temp left


def test_report_without_baseline_still_draws_the_rest(tmp_path):
    out = report.write_report([make_run("r2", 2, 180.0)], tmp_path / "r.html")
    html = out.read_text(encoding="utf-8")
    assert "no 1-worker baseline: add a 1-worker ddp (or single) run" in html
    assert html.count(plotly.offline.get_plotlyjs()[:200]) == 1  # moved to the next figure
    assert html.count("Plotly.newPlot(") == len(report._FIGURES) - 1


def test_report_write_is_atomic(tmp_path, runs, monkeypatch):
    target = tmp_path / "report.html"
    target.write_text("old report")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(report.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        report.write_report(runs, target)
    assert target.read_text() == "old report"  # the old file is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]


def test_plots_import_only_lower_layers():
    allowed = {"__future__", "typing", "pandas", "plotly", "parakit.records", "parakit.config.run",
               "parakit.plots.base", "parakit.plots.measures", "parakit.plots.memory", "parakit.plots.time", "parakit.plots.switching",
               "parakit.plots.timeline", "parakit.plots.context", "parakit.plots.experts"}
    tree = ast.parse(Path(plots.__file__).read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module]
        else:
            continue
        for name in names:
            assert any(name == a or name.startswith(a + ".") for a in allowed), name


# -- what the measurement layer adds ---------------------------------------------------------
def with_breakdown(run, compute, comm, exposed, idle):
    run.summary = replace(run.summary, compute_time_s=compute, comm_time_s=comm, exposed_comm_time_s=exposed,
                          idle_time_s=idle)
    return run


def test_breakdown_stacks_compute_exposed_comm_and_idle_in_ms():
    a = with_breakdown(make_run("a", 2, 640), 0.060, 0.030, 0.010, 0.030)
    b = make_run("b", 2, 640)  # no breakdown recorded: skipped, said so
    fig = plots.PLOTS["breakdown"]([a, b])
    bars = {t.name: t for t in fig.data if t.type == "bar"}
    assert list(bars) == ["compute", "exposed communication", "idle"]
    assert list(bars["compute"].y) == pytest.approx([60.0])
    assert list(bars["exposed communication"].y) == pytest.approx([10.0])
    assert list(bars["idle"].y) == pytest.approx([30.0])
    assert bars["compute"].customdata[0][4] == pytest.approx(20.0)  # hidden communication, ms
    marker = next(t for t in fig.data if t.type == "scatter")
    assert list(marker.y) == pytest.approx([100.0])  # 64 / 640 s
    assert fig.layout.barmode == "stack"
    assert "1 run skipped (no recorded breakdown)" in fig.layout.title.subtitle.text


def test_bytes_plot_draws_sent_beside_fp32_and_skips_uncounted_runs():
    a = make_run("a", 2, 640)
    a.config["compression"] = "powersgd:4"
    a.summary = replace(a.summary, comm_bytes_per_step=2**20, uncompressed_bytes_per_step=64 * 2**20,
                        compression_ratio=64.0)
    b = make_run("b", 2, 640)
    b.summary = replace(b.summary, comm_bytes_per_step=None)
    fig = plots.PLOTS["bytes"]([a, b])
    got = {t.name: list(t.y) for t in fig.data}
    assert got == {"fp32 all-reduce": [64.0], "sent": [1.0]}
    assert "1 run skipped (bytes not counted)" in fig.layout.title.subtitle.text


def test_power_draws_each_device_once_with_its_counter_energy():
    gpu = {"energy_j": 120.0, "samples": [[0.0, 300.0, 90, 1], [0.05, 310.0, 95, 1]], "scope": "gpu (this engine's GPU)"}
    a = make_run("a", 2, 640)
    for rank in a.ranks:  # two engines sharing one GPU read the same counter
        rank.power, rank.power_device, rank.device, rank.device_name = gpu, "GPU-1", "cuda:0", "H100"
    b = make_run("b", 2, 640)  # a CPU run without RAPL: no samples, skipped and said
    fig = plots.PLOTS["power"]([a, b])
    assert len(fig.data) == 1
    assert list(fig.data[0].y) == [300.0, 310.0] and list(fig.data[0].x) == [0.0, 0.05]
    assert fig.data[0].name == "ddp x2 mlp · H100 · 120.0 J"
    assert "1 run skipped (no power samples)" in fig.layout.title.subtitle.text


# -- switched runs ----------------------------------------------------------------------------
def switched_run():
    """A run of 4 steps that switched ddp -> fsdp before step 2, each segment with its own rank
    power samples (on its own loop's clock, as the engines record them)."""
    def rank(watts):
        return RankInfo(rank=0, engine_id=0, pid=1, host="h", device="cuda:0", device_name="GPU",
                        power={"samples": [[0.0, watts, 0, 0], [0.1, watts, 0, 0]], "scope": "GPU", "energy_j": 1.0,
                               "avg_power_w": 10.0, "duration_s": 0.1},
                        power_device="gpu-0")
    steps = [StepRecord(step=i, loss=4.0 - i, step_time_s=0.1, rank_step_time_s=[0.1], warmup=i in (0, 2),
                        time_s=t) for i, t in enumerate([0.1, 0.2, 0.8, 0.9])]  # the switch paused 0.5 s
    segments = [SegmentRecord.from_dict({  # as the store reads it back
        "index": k, "first_step": 2 * k, "last_step": 2 * k + 1, "status": OK,
        "settings": {"strategy": s, "model": "gpt", "workers": 2}, "label": "start" if k == 0 else s,
        "world_size": 2, "switch_s": None if k == 0 else 0.5, "state_save_s": None if k == 0 else 0.2,
        "state_load_s": None if k == 0 else 0.2, "summary": {"samples_per_s": 100.0 * (k + 1)},
        "ranks": [vars(rank(100 + 50 * k))]}) for k, s in enumerate(("ddp", "fsdp"))]
    return RunResult(run_id="r1", status=OK, config={"strategy": "ddp", "model": "gpt", "workers": 2},
                     world_size=2, backend="gloo", device_names=["GPU"], steps=steps, segments=segments)


def test_a_switched_run_draws_a_line_per_segment_and_marks_the_switch():
    run = switched_run()
    loss = plots.loss([run])
    assert [list(d.x) for d in loss.data] == [[0, 1], [2, 3]]
    assert [a.text for a in loss.layout.annotations if a.text.startswith("→")] == ["→ fsdp"]
    assert [s.x0 for s in loss.layout.shapes if s.line.dash == "dash"] == [1.5]
    power = plots.PLOTS["power"]([run])
    # each segment's samples moved onto the run's clock: the second began at 0.8 - 0.1 s
    assert [list(d.x) for d in power.data] == [[0.0, 0.1], pytest.approx([0.7, 0.8])]
    assert [s.x0 for s in power.layout.shapes if s.line.dash == "dash"] == [pytest.approx(0.7)]
    assert list(plots.throughput([run]).data[0].y) == [100.0, 200.0]
    cost = plots.PLOTS["switches"]([run])
    assert [d.y[0] for d in cost.data] == pytest.approx([0.2, 0.1, 0.2])  # save, the rest, load
