"""``parakit preflight``: every example notebook's dry run on every faked machine (a CPU, one
GPU, two, eight H100s, a GPU before fp8) with no refusal the notebook does not expect, and
nothing started. The dry run catches a refusal, tells an expected one (caught, or in a cell
tagged raises-exception) from one that is not, and the command says it in one line with exit
code 2. Every notebook is checked: the Session-API ones (06, 08, 09) as well as the magic ones."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import nbformat
import pytest

from parakit.cluster import engines, placement
from parakit.frontends.cli import main
from parakit.session.dry_machines import MACHINES
from parakit.frontends.notebook_check import EXPECTS_REFUSAL, dry_run
from parakit.session import preflight

NOTEBOOKS = sorted((Path(__file__).parents[2] / "notebooks").glob("*.ipynb"))
GPU_MACHINES = [name for name, m in MACHINES.items() if m.gpu_count]


@pytest.fixture(autouse=True)
def no_engine_starts(monkeypatch):
    """A dry run starts nothing: an engine set asked to start fails the test."""
    def start(*args, **kwargs):
        raise AssertionError("a dry run started engines")

    monkeypatch.setattr(engines.EngineSet, "start", start)


@pytest.mark.parametrize("machine", list(MACHINES))
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem[:2])
def test_every_notebook_is_accepted_on_every_machine(notebook, machine):
    found = dry_run(notebook, MACHINES[machine])
    assert found.ok, "\n".join(found.lines(verbose=True))
    assert found.checks, f"{notebook.name}: no request reached the preflight"
    assert not any("AssertionError: a dry run started engines" in why for why in found.ended_early.values())


def requests(found) -> str:
    return "\n".join(c.request for c in found.checks)


def test_the_notebooks_take_their_gpu_path_on_gpu_machines():
    """The faked status says cuda:0, so ON_GPU and SCALE are the GPU's: 03 asks for tf32 and
    fp16 there and never for fp8 (which needs --compile), and neither on a CPU."""
    notebook = next(p for p in NOTEBOOKS if p.name.startswith("03"))
    on_h100, on_cpu = (requests(dry_run(notebook, MACHINES[m])) for m in ("8xh100", "cpu"))
    assert "--precision tf32" in on_h100 and "--precision fp16" in on_h100 and "width=1024" in on_h100
    assert "fp8" not in on_h100
    assert "tf32" not in on_cpu and "width=128 " in on_cpu


@pytest.mark.parametrize("name, machine, asks", [("02", "2xgpu", True), ("02", "1xgpu", False), ("02", "cpu", True),
                                                  ("12", "8xh100", True), ("12", "1xgpu", False)])
def test_a_notebook_leaves_out_point_to_point_layouts_only_where_engines_share_a_gpu(name, machine, asks):
    """The faked status gives each engine's physical GPU (``gpu_index``), as a real one does:
    every engine sees its GPU as cuda:0, so the device alone cannot tell shared GPUs apart."""
    notebook = next(p for p in NOTEBOOKS if p.name.startswith(name))
    asked = requests(dry_run(notebook, MACHINES[machine]))
    assert ("pipeline" in asked) is asks, asked


def synthetic(tmp_path: Path, cells: list[tuple[str, list[str]]]) -> Path:
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_markdown_cell("# a notebook")] + [
        nbformat.v4.new_code_cell(source, metadata={"tags": tags}) for source, tags in cells]
    path = tmp_path / "synthetic.ipynb"
    nbformat.write(notebook, path)
    return path


RUN = "--strategy ddp --workers 2 --model gpt --steps 4"
CELLS = [
    ("%load_ext parakit\n%parakit start -n 2\nengines = %parakit status\n"
     "ON_GPU = bool(engines['device'].str.startswith('cuda').all())", []),
    # notebook 03 as it was: every precision a GPU has, fp8 without --compile
    ("from parakit import GPU_ONLY_PRECISIONS, Precision\n"
     "for p in [p.value for p in Precision if ON_GPU or p not in GPU_ONLY_PRECISIONS]:\n"
     f"    %parakit run --precision {{p}} {RUN}", []),
    (f"%parakit run --precision fp8 {RUN}", [EXPECTS_REFUSAL]),
    (f"from IPython.core.error import UsageError\ntry:\n    %parakit run --precision fp8 {RUN}\n"
     "except UsageError as e:\n    print('left out fp8:', e)", []),
    (f"%parakit run --precision fp8 --compile {RUN}", [EXPECTS_REFUSAL]),
    ("import parakit\nsession = parakit.Session(2)\nsession.run('gpt', strategy='pipeline', workers=2, steps=4)", []),
]


def test_a_refusal_is_caught_and_told_from_an_expected_one(tmp_path):
    path = synthetic(tmp_path, CELLS)
    on_h100 = dry_run(path, MACHINES["8xh100"])
    [refused] = on_h100.unexpected
    assert (refused.cell, refused.refusal.split(":")[0]) == (3, "fp8 needs compile=True")
    assert "--precision fp8" in refused.request
    assert sorted(c.cell for c in on_h100.expected) == [4, 5]  # tagged, and caught by the notebook
    compiled = next(c for c in on_h100.checks if c.cell == 6)
    assert compiled.refusal is None and 6 not in on_h100.ended_early  # capability 9.0, torchao: accepted

    on_v100 = dry_run(path, MACHINES["old-gpu"])
    compiled = next(c for c in on_v100.checks if c.cell == 6)
    assert "Tesla V100-SXM2-16GB is 7.0" in compiled.refusal  # expected there: the cell is tagged
    assert [c.cell for c in on_v100.unexpected] == [3, 7]  # and 2 ranks on 1 GPU cannot run a pipeline
    assert on_v100.unexpected[1].request.startswith("session.run('gpt', strategy='pipeline'")
    assert [c.cell for c in dry_run(path, MACHINES["2xgpu"]).unexpected] == [3]  # 2 GPUs can

    on_cpu = dry_run(path, MACHINES["cpu"])
    assert [c.cell for c in on_cpu.unexpected] == []  # the loop keeps CPU precisions; fp8 refusals expected
    assert all("on CPU use bf16" in c.refusal for c in on_cpu.expected)


def test_a_dry_run_leaves_this_process_as_it_was(tmp_path):
    import parakit

    before = (placement.host_facts, preflight.gpu_capabilities, preflight.torchao_installed, parakit.Session,
              os.getcwd(), set(sys.modules) - {"__parakit_dry_run__"})
    dry_run(synthetic(tmp_path, CELLS[:1]), MACHINES["8xh100"])
    after = (placement.host_facts, preflight.gpu_capabilities, preflight.torchao_installed, parakit.Session,
             os.getcwd(), set(sys.modules))
    assert after[:5] == before[:5] and "__parakit_dry_run__" not in after[5]


def test_the_command_says_each_refusal_in_one_line(tmp_path, capsys):
    path = synthetic(tmp_path, CELLS)
    assert main(["preflight", str(path), "--machine", "8xh100"]) == 2
    out = capsys.readouterr().out
    assert f"  cell 3 REFUSED: %parakit run --precision fp8 {RUN}: fp8 needs compile=True" in out
    assert out.strip().endswith("preflight: 1 dry run(s), 1 unexpected refusal(s)")

    fixed = synthetic(tmp_path, CELLS[:1] + CELLS[2:5])
    assert main(["preflight", str(fixed), "--machine", "cpu,1xgpu"]) == 0
    assert capsys.readouterr().out.strip().endswith("preflight: 2 dry run(s), 0 unexpected refusal(s)")

    assert main(["preflight", str(path), "--machine", "tpu"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"parakit: error: no machine 'tpu'; the machines are: {', '.join(MACHINES)}"
