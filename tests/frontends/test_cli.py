"""The parakit command: bad input is one line and exit code 2 with nothing started; a real run
prints only JSON with --json; the demo prints its table and writes its report."""

import json
import re
import os
import subprocess
import sys

import pytest

from parakit.frontends.text import speedup_cell
from parakit import load_runs


def parakit(*args, cwd=None, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "parakit", *args], capture_output=True, text=True,
        cwd=cwd, timeout=timeout, env={**os.environ, "PYTHONWARNINGS": "ignore::DeprecationWarning"},
    )


# Every bad command line runs in ONE process, one after another, through the same main() that
# ``python -m parakit`` calls: a fresh interpreter per case cost ~4 s of imports each, 100 s in all.
ONE_PROCESS = """
import contextlib, io, json, sys
from parakit.frontends.cli import main
found = []
for argv in json.loads(sys.argv[1]):
    out, err, code = io.StringIO(), io.StringIO(), 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as e:  # argparse's own errors exit
            code = e.code
    found.append([code, out.getvalue(), err.getvalue()])
print(json.dumps(found))
"""


def each_in_one_process(command_lines: list[list[str]], cwd) -> list[tuple[int, str, str]]:
    out = subprocess.run([sys.executable, "-c", ONE_PROCESS, json.dumps(command_lines)], capture_output=True,
                         text=True, cwd=cwd, timeout=600, env={**os.environ, "PYTHONWARNINGS": "ignore::DeprecationWarning"})
    assert out.returncode == 0, out.stderr
    return [tuple(case) for case in json.loads(out.stdout.splitlines()[-1])]


BAD_RUNS = [
        (["--workers", "0"], "workers must be >= 1"),
        (["--workers", "999"], "use workers <="),
        (["--workers", "3", "--batch-size", "64"], "use a multiple of 3"),
        (["--model", "resnet"], "unknown model 'resnet': the built-ins are mlp, cnn, gpt"),
        (["--strategy", "fsdpp"], "strategy must be one of single, ddp"),
        (["--device", "tpu"], "device must be one of auto, cpu, cuda"),
        (["--device", "cuda"], "use device cpu or auto"),
        (["--strategy", "single", "--workers", "2"], "use strategy ddp"),
        (["--workers", "two"], "invalid int value"),
        (["--model-option", "width"], "expected KEY=INT"),
        (["--bogus"], "unrecognized arguments"),
        (["--strategy", "tensor", "--model", "cnn"], "no plan for cnn"),
        (["--strategy", "hybrid", "--workers", "4", "--mesh", "2x3"], "has 6 ranks but workers=4"),
        (["--strategy", "pipeline", "--model", "gpt", "--workers", "2", "--microbatches", "5"], "micro-batches do not divide"),
        (["--precision", "fp16", "--device", "cpu"], "fp16 with loss scaling needs a GPU"),
        (["--switch", "4:batch_size=8"], "batch_size cannot be switched"),
        (["--switch", "4:workers=two"], "workers in a switch must be a number"),
        (["--strategy", "fsdp", "--switch", "4:zero=1"], "zero=1 applies to ddp, not fsdp"),
        (["--resume", "20990101-000000-abcdef"], "has no saved state"),
        (["--compression", "topk:2"], "ratio must be in (0, 1]"),
        (["--strategy", "pipeline", "--compression", "powersgd:4"], "does not apply to pipeline"),
        (["--price-kwh", "-1"], "argument --price-kwh: expected a number >= 0"),
        (["--strategy", "tensor", "--tp-plan", "auto", "--tp-plan", "fc1=colwise"], "--tp-plan auto takes the model's own plan"),
]
BAD_FITS = [
    (["--vary", "height"], "vary must be one of depth, width, batch_size"),
    (["--memory-limit", "lots"], "memory_limit must be a positive number of bytes"),
    (["--strategies", "ddp:zero=2"], "zero=2 applies to fsdp or fsdp+tensor, not ddp"),
    (["--model", "cnn"], "vary=depth sizes the built-in mlp or gpt"),
]


@pytest.fixture(scope="module")
def refused(tmp_path_factory):
    """Each bad command line's (exit code, stdout, stderr), and whether it wrote a run store."""
    where = tmp_path_factory.mktemp("bad-input")
    lines = [["run", *args, "--runs-dir", str(where / f"run-{i}")] for i, (args, _) in enumerate(BAD_RUNS)]
    lines += [["fit", *args, "--device", "cpu", "--runs-dir", str(where / f"fit-{i}")]
              for i, (args, _) in enumerate(BAD_FITS)]
    found = each_in_one_process(lines, where)
    wrote = [(where / f"run-{i}").exists() for i in range(len(BAD_RUNS))]
    wrote += [(where / f"fit-{i}").exists() for i in range(len(BAD_FITS))]
    return [(*f, w) for f, w in zip(found, wrote)]


@pytest.mark.parametrize("at, args, fix", [(i, *case) for i, case in enumerate(BAD_RUNS)])
def test_bad_input_is_one_line_exit_2_and_starts_nothing(refused, at, args, fix):
    code, stdout, stderr, wrote = refused[at]
    assert code == 2
    assert stdout == ""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("parakit: error:") and fix in lines[0], stderr
    assert "Traceback" not in stderr
    assert not wrote  # nothing was started or written


def test_a_bad_command_line_in_its_own_process_is_one_line_exit_2(tmp_path):
    """The batch above runs main() in one process; the real command, once, as users run it."""
    out = parakit("run", "--workers", "0", "--runs-dir", str(tmp_path / "runs"), cwd=tmp_path)
    assert (out.returncode, out.stdout) == (2, "")
    assert out.stderr.strip() == "parakit: error: workers must be >= 1 (got 0)"
    assert not (tmp_path / "runs").exists()


def test_run_json_prints_only_the_run_result(tmp_path):
    out = parakit("run", "--workers", "2", "--model", "mlp", "--steps", "4", "--batch-size", "16",
                  "--device", "cpu", "--json", "--runs-dir", str(tmp_path / "runs"), "--price-device-hour", "2.5",
                  cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)  # stdout is JSON and nothing else
    assert result["status"] == "ok" and result["world_size"] == 2 and result["backend"] == "gloo"
    assert result["cost_usd"] > 0 and "at $2.5 per core-hour (given" in result["cost_method"]["cost_usd"]
    assert len(result["steps"]) == 4 and result["summary"]["samples_per_s"] > 0
    saved = list((tmp_path / "runs").glob("*.json"))
    assert [p.stem for p in saved] == [result["run_id"]]


def test_demo_prints_speedup_table_and_writes_report(tmp_path):
    out = parakit("demo", "--steps", "4", "--device", "cpu", "--runs-dir", str(tmp_path / "runs"),
                  cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "large batch: " in out.stdout and "small batch: " in out.stdout  # the two lessons
    assert "speed-up" in out.stdout and "samples/s" in out.stdout and "(cost: the whole run's wall clock" in out.stdout
    runs = load_runs(tmp_path / "runs")
    assert len(runs) == 4  # 2 cases x 1 and 2 workers
    # one sentence per run on where its time went, from its own breakdown
    said = out.stdout.split("Where the time went:")[1]
    for run_id, workers in zip(runs["run_id"], runs["workers"]):
        line = next(l for l in said.splitlines() if l.strip().startswith(run_id))
        assert "computing" in line and ("one worker sends nothing" if workers == 1 else "-bound: ") in line, line
    report = tmp_path / "runs" / "demo-report.html"
    assert f"report: {report}" in out.stdout
    html = report.read_text()
    assert "Plotly" in html and not re.search(r"<script[^>]*\ssrc=", html)  # self-contained
    assert "Where the time went" in html and "Time breakdown" in html and "What the runs cost" in html


def test_sweep_runs_the_product_and_prints_one_speedup_per_run(tmp_path):
    out = parakit("sweep", "--workers", "1,2", "--precision", "fp32,bf16", "--steps", "3", "--batch-size", "16",
                  "--device", "cpu", "--runs-dir", str(tmp_path / "runs"), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    frame = load_runs(tmp_path / "runs").set_index("run_id")
    ends = [line for line in out.stdout.splitlines() if line.startswith("[")]  # a line per run, as it ends
    assert len(ends) == 4 and any(ends[-1].startswith(f"[4/4] {i} ddp x2 mlp bf16: ") for i in frame.index), ends
    assert len(frame) == 4
    for run_id, row in frame.iterrows():  # the table's speed-up, interval and all, is the runs frame's
        line = next(line for line in out.stdout.splitlines() if line.startswith(run_id))
        assert speedup_cell(row) in line and line.split()[-1] == f"{row['strong_efficiency']:.2f}"


def test_sweep_refuses_a_combination_that_does_not_fit_before_any_engine(tmp_path):
    out = parakit("sweep", "--workers", "1,2", "--precision", "fp32,fp16", "--device", "cpu",
                  "--runs-dir", str(tmp_path / "runs"), cwd=tmp_path)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.strip() == ("parakit: error: 2 of 4 combinations do not fit, e.g. ddp x1 mlp fp16: fp16 with "
                                  "loss scaling needs a GPU; on CPU use bf16 or fp32; drop them from the lists")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("at, args, fix", [(len(BAD_RUNS) + i, *case) for i, case in enumerate(BAD_FITS)])
def test_fit_bad_input_is_one_line_exit_2_and_starts_nothing(refused, at, args, fix):
    code, stdout, stderr, wrote = refused[at]
    assert code == 2 and stdout == "" and not wrote
    assert stderr.strip().startswith("parakit: error:") and fix in stderr and "\n" not in stderr.strip()
