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
import gpu_suite
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


def test_gpu_suite_runs_bf16_compiled_large_first():
    args = argparse.Namespace(tiny=False, compile="both", precisions="bf16,fp32")
    order = gpu_suite.plan(args)
    assert order[0] == ("125M", "bf16", True) and len(order) == 8


def test_the_first_step_is_the_engine_stamp_or_the_fallback():
    first = startup.FirstStep()
    assert first.end(99.0) == (99.0, False)  # no message seen: the result's arrival stands in
    first({"step": 1, "steps": 1, "wall_time_s": 12.5})
    first({"step": 2, "steps": 2, "wall_time_s": 13.0})  # later messages do not replace it
    assert first.end(99.0) == (12.5, True)
