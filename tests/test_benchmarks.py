"""The benchmark suite's own logic, without running a benchmark: run_all rewrites only its
section of docs/benchmarks.md, says which GPU rows are not measured yet, and judges targets
from the figures; gpu_suite runs the most important rows first."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

# The benchmark scripts, found through the line above.
import cpu_scaling
from parakit.records import intervals
import gpu_profile
import gpu_suite
import interval_coverage
import run_all
import startup


def test_the_doc_is_rewritten_between_the_markers_only(tmp_path, monkeypatch):
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\nintro\n\n## Method\n\nhand-written\n")
    monkeypatch.setattr(run_all, "DOC", doc)
    run_all.write_doc(run_all.render({}, None, None))
    first = doc.read_text()
    assert first.startswith("# Benchmarks\n\n") and first.endswith("## Method\n\nhand-written\n")
    assert first.count(run_all.SUITE_BEGIN) == 1
    run_all.write_doc(run_all.render({}, None, None))  # again: replaced, not added
    assert doc.read_text() == first


def test_unmeasured_gpu_rows_say_how_to_measure_them():
    section = run_all.render({}, None, None)
    assert "not yet measured: run `python benchmarks/gpu_suite.py` on the device" in section
    assert "power_check.py" in section


def gpu_report(mfu):
    row = {"size": "125M", "params": 127e6, "precision": "bf16", "compile": True, "batch_size": 16,
           "options": {"seq_len": 1024}, "status": "ok", "step_time_s": 0.05, "tokens_per_s": 327680.0,
           "tflops": 300.0, "mfu": mfu}
    return {"rows": [row], "skipped": [], "attention": {"bf16": "aten::_scaled_dot_product_flash_attention"},
            "command": "python benchmarks/gpu_suite.py", "machine": "1x H100", "date": "2026-11-23",
            "target_mfu": 0.40}


@pytest.mark.parametrize("mfu, verdict", [(0.45, "(met)"), (0.30, "(NOT met)")])
def test_the_mfu_target_is_judged_from_the_figure(mfu, verdict):
    row = run_all.gpu_rows(gpu_report(mfu))[0]
    assert verdict in row["target"] and f"{mfu * 100:.1f} %" in row["value"]


def test_gpu_suite_runs_the_goals_cases_first_larger_size_first():
    args = argparse.Namespace(tiny=False, compile="both", precisions="bf16,fp8,tf32,fp32")
    order = gpu_suite.plan(args)
    assert order[:4] == [("350M", "bf16", True), ("125M", "bf16", True), ("350M", "fp8", True), ("125M", "fp8", True)]
    assert len(order) == 16 and len(set(order)) == 16


def suite_row(size, precision, tokens_per_s, mfu=None, wall_s=30.0, status="ok"):
    return {"size": size, "precision": precision, "compile": True, "status": status, "tokens_per_s": tokens_per_s,
            "mfu": mfu, "run_wall_s": wall_s}


def test_the_gpu_goals_are_judged_at_the_sizes_the_issue_names():
    rows = [suite_row("125M", "bf16", 100.0, 0.45), suite_row("125M", "fp8", 140.0),
            suite_row("350M", "bf16", 50.0, 0.52), suite_row("350M", "fp8", 60.0)]
    mfu, fp8 = gpu_suite.judge_goals(rows, ["125M", "350M"], case_budget_s=90)
    assert (mfu["size"], mfu["value"], mfu["met"]) == ("350M", 0.52, True)
    assert (fp8["size"], fp8["met"], fp8["case"]) == ("350M", False, ("350M", "fp8", True))
    assert fp8["value"] == pytest.approx(1.2)


def test_the_fp8_goal_drops_to_the_largest_size_within_the_case_budget():
    rows = [suite_row("125M", "bf16", 100.0, 0.45), suite_row("125M", "fp8", 140.0),
            suite_row("350M", "bf16", 50.0, 0.40, wall_s=95.0), suite_row("350M", "fp8", 60.0)]
    mfu, fp8 = gpu_suite.judge_goals(rows, ["125M", "350M"], case_budget_s=90)
    assert mfu["met"] is False and mfu["case"] == ("350M", "bf16", True)
    assert (fp8["size"], fp8["met"]) == ("125M", True) and fp8["value"] == pytest.approx(1.4)


def test_a_goal_without_rows_says_why_instead_of_a_verdict():
    mfu, fp8 = gpu_suite.judge_goals([suite_row("350M", "fp8", 0.0, status="error")], ["125M", "350M"], 90)
    assert mfu["met"] is None and "no bf16 compiled run" in mfu["reason"]
    assert fp8["met"] is None and "within the case budget" in fp8["reason"]


class Event:
    def __init__(self, key, cpu_us, cuda_us, count=1):
        self.key, self.self_cpu_time_total, self.self_device_time_total, self.count = key, cpu_us, cuda_us, count


def test_the_top_kernels_are_ordered_by_self_time_with_their_share():
    events = [Event("aten::mm", 10.0, 600.0, 3), Event("flash_fwd", 5.0, 300.0), Event("cpu_only", 900.0, 0.0),
              Event("copy", 1.0, 100.0)]
    table = gpu_profile.kernel_table(events, cuda=True, top=2)
    assert [k["name"] for k in table] == ["aten::mm", "flash_fwd"]
    assert table[0]["share"] == pytest.approx(0.6) and table[0]["self_ms"] == pytest.approx(0.6)
    assert gpu_profile.kernel_table(events, cuda=False, top=1)[0]["name"] == "cpu_only"


def test_cpu_scaling_batches_strong_fixed_and_weak_per_worker():
    strong = cpu_scaling.MODELS["gpt"]["batch_size"]
    assert [cpu_scaling.batch_for("gpt", "strong", n) for n in (1, 2, 4, 8)] == [strong] * 4
    assert [cpu_scaling.batch_for("gpt", "weak", n) for n in (1, 2, 8)] == [strong // 4, strong // 2, 2 * strong]
    assert cpu_scaling.batch_for("mlp", "probe", 4) == cpu_scaling.MODELS["mlp"]["batch_size"]


def test_cpu_scaling_speedups_are_against_single_at_the_same_mode():
    rows = [{"model": "gpt", "mode": m, "strategy": st, "workers": n, "status": "ok", "samples_per_s": v}
            for m, st, n, v in [("strong", "single", 1, 100.0), ("strong", "ddp", 4, 300.0),
                                ("weak", "single", 1, 50.0), ("weak", "ddp", 4, 100.0)]]
    rows[1]["within_run_sd"] = 0.05
    cpu_scaling.speedups(rows)
    assert [x for r in rows for x in (r["speedup"], r["ideal"], r["efficiency"])] == pytest.approx(
        [1.0, 1, 1.0, 3.0, 4, 0.75, 1.0, 1, 1.0, 2.0, 4, 0.5])
    # the interval is parakit's one rule: the two runs' noise in quadrature, run-to-run included
    found = intervals.ratio(intervals.run_estimate(300.0, 0.05),
                                            intervals.run_estimate(100.0, None))
    assert (rows[1]["speedup_low"], rows[1]["speedup_high"], rows[1]["verdict"]) == (found.low, found.high, "faster")
    assert rows[0]["verdict"] == "no measurable difference"


def test_the_cpu_scaling_figure_has_a_panel_per_model_and_mode_and_the_ideal():
    report = {"models": {"gpt": {}, "mlp": {}}, "workers": [1, 2], "machine": "m", "schedules": {"gpt": {"best": "1f1b"}},
              "rows": [{"model": "gpt", "mode": "strong", "strategy": "ddp", "workers": 2, "speedup": 1.8}]}
    fig = cpu_scaling.figure(report)
    assert len(fig.layout.annotations) == 4  # the subplot titles
    ddp = [t for t in fig.data if t.name == "ddp" and len(t.x)]
    assert len(ddp) == 1 and list(ddp[0].y) == [1.8]
    assert sum(t.name == "ideal" for t in fig.data) == 4


def test_the_first_step_is_the_engine_stamp_or_the_fallback():
    first = startup.FirstStep()
    assert first.end(99.0) == (99.0, False)  # no message seen: the result's arrival stands in
    first({"step": 1, "steps": 1, "wall_time_s": 12.5})
    first({"step": 2, "steps": 2, "wall_time_s": 13.0})  # later messages do not replace it
    assert first.end(99.0) == (12.5, True)


def test_interval_coverage_counts_the_pairs_whose_interval_holds_the_long_reference():
    from types import SimpleNamespace

    def run(samples_per_s, within=0.02):
        return SimpleNamespace(summary={"samples_per_s": samples_per_s, "within_run_sd": within})

    # long runs: 100 and 150 samples/s, a 1.5x reference; short pairs at 1.5x, 1.45x and 3x
    sessions = [{"long": {1: [run(100)], 2: [run(150)]}, "short": {1: [run(100), run(100)], 2: [run(150), run(145)]}},
                {"long": {1: [run(100)], 2: [run(150)]}, "short": {1: [run(50)], 2: [run(150)]}}]
    out = interval_coverage.measures(sessions)
    assert out["reference_speedup"] == pytest.approx(1.5)
    assert out["comparisons"] == 3 and out["coverage"] == pytest.approx(2 / 3)
    assert [r["covers"] for r in out["rows"]] == [True, True, False]
    assert out["first_run_coverage"] == pytest.approx(0.5) and out["median_relative_width"] > 0
    assert out["sessions_overlap"] is False  # 1.48x against 3x: the sessions disagree
