"""compile=True: a compiled run trains the same model as an eager one (same losses, replicas
in step), really compiles on every rank, and combinations that cannot work are refused up
front with one line that names the fix.

Inductor on a 2-core CPU compiles slowly (~30 s for the smallest gpt, cold), so the module
makes one compiled run, of the smallest gpt there is.
"""

from __future__ import annotations

import pytest

from parakit.frontends import cli, options
from parakit.config.run import RunConfig

TINY_GPT = {"model": "gpt", "model_options": {"width": 16, "depth": 2, "heads": 2, "seq_len": 8},
            "strategy": "ddp", "workers": 2, "steps": 3, "warmup_steps": 1, "batch_size": 4, "profile_every": 0}


@pytest.fixture(scope="module")
def eager_and_compiled(session):
    eager = session.run(**TINY_GPT)
    compiled = session.run(compile=True, **TINY_GPT)
    assert eager.ok, eager.error
    assert compiled.ok, compiled.error
    return eager, compiled


def test_a_compiled_run_trains_the_same_model(eager_and_compiled):
    eager, compiled = eager_and_compiled
    assert [s.loss for s in compiled.steps] == pytest.approx([s.loss for s in eager.steps], rel=1e-4)
    digests = {r.params_digest for r in compiled.ranks}
    assert len(digests) == 1  # the ddp replicas ended bit-identical
    assert compiled.config["compile"] is True and "compile" not in eager.config
    assert "torch.compile" in compiled.summary["method"]["step_time_s"]  # the warm-up absorbs it


def test_every_rank_compiled_one_graph_for_its_identical_blocks(session, eager_and_compiled):
    # One graph per engine: both blocks share it (compiling costs one block, not depth's).
    out = session.execute("import torch._dynamo.utils as u; u.counters['stats']['unique_graphs']", workers=2)
    assert [o["error"] for o in out] == [None, None]
    assert [o["result"] for o in out] == ["1", "1"]


@pytest.mark.parametrize(
    "settings, fix",
    [
        ({"strategy": "pipeline", "workers": 2, "model": "gpt"}, "compile does not combine with pipeline yet"),
        ({"strategy": "hybrid", "hybrid": "pipeline+ddp", "workers": 4, "model": "gpt", "model_options": {"depth": 4}},
         "drop compile"),
        ({"warmup_steps": 0}, "compile needs warmup_steps >= 1"),
    ],
)
def test_combinations_that_cannot_work_are_refused(settings, fix):
    with pytest.raises(ValueError, match=fix):
        RunConfig(compile=True, **settings)


@pytest.mark.parametrize("name", ["compile", "live"])
def test_switches_must_be_real_bools(name):
    with pytest.raises(ValueError, match=f"{name} must be True or False"):
        RunConfig(**{name: "yes"})


def test_the_command_line_takes_compile(capsys, tmp_path):
    args = cli.build_parser().parse_args(["run", "--compile"])
    assert options.run_settings(args)["compile"] is True
    assert options.run_settings(cli.build_parser().parse_args(["run"]))["compile"] is False
    code = cli.main(["run", "--compile", "--strategy", "pipeline", "--model", "gpt", "--workers", "2",
                     "--runs-dir", str(tmp_path / "runs")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "drop compile" in err[0]
    assert not (tmp_path / "runs").exists()  # refused before anything started
