"""Bad input at the front ends: the command line, the magics (without engines, and on running
ones) and the panel each hand their input to the one pre-launch check and say its answer in one
line, and nothing starts. (The refusals themselves: tests/session/test_preflight.py.)"""

from __future__ import annotations

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

from parakit.frontends import cli, magics
from parakit.frontends.panel import Panel

from refusal_helpers import cpu_only, nothing_starts, one_line_naming, untouched  # noqa: F401


# -- the command line --------------------------------------------------------------------------
CLI = [
    ([], "the following arguments are required: command"),
    (["fly"], "invalid choice: 'fly'"),
    (["run", "--workers", "0"], "workers must be >= 1 (got 0)"),
    (["run", "--workers", "two"], "argument --workers: invalid int value: 'two'"),
    (["run", "--workers", "999"], "use workers <="),
    (["run", "--steps", "0"], "steps must be >= 1 (got 0)"),
    (["run", "--steps", "1"], "warmup_steps (2) must be smaller than steps (1)"),
    (["run", "--warmup-steps", "-1"], "warmup_steps must be >= 0 (got -1)"),
    (["run", "--batch-size", "0"], "batch_size must be >= 1 (got 0)"),
    (["run", "--workers", "2", "--batch-size", "7"], "use a multiple of 2"),
    (["run", "--lr", "0"], "lr must be a positive number (got 0.0)"),
    (["run", "--lr", "nan"], "lr must be a positive number (got nan)"),
    (["run", "--seed", "-1"], "seed must be >= 0 (got -1)"),
    (["run", "--profile-every", "-2"], "profile_every must be >= 0 (got -2)"),
    (["run", "--bucket-mb", "0"], "bucket_mb must be a positive number of MB (got 0.0)"),
    (["run", "--model", "resnet"], "unknown model 'resnet': the built-ins are mlp, cnn, gpt; give package.module:name"),
    (["run", "--model-option", "width"], "expected KEY=INT, e.g. width=256, got 'width'"),
    (["run", "--model-option", "wide=3"], "model mlp has no option 'wide'"),
    (["run", "--model-option", "width=0"], "model option width must be >= 1 (got 0)"),
    (["run", "--strategy", "fsdpp"], "strategy must be one of single, ddp, fsdp, pipeline, tensor, hybrid, expert, context"),
    (["run", "--strategy", "single", "--workers", "2"], "use strategy ddp for more"),
    (["run", "--precision", "fp4"], "precision must be one of fp32, tf32, fp16, bf16, bf16-pure, fp8"),
    (["run", "--precision", "fp8", "--device", "cpu"], "fp8 needs an NVIDIA GPU of compute capability 8.9"),
    (["run", "--precision", "fp16", "--device", "cpu"], "on CPU use bf16 or fp32"),
    (["run", "--compression", "zip"], "compression must be one of none, fp16, bf16, powersgd, topk, randomk"),
    (["run", "--compression", "topk:2"], "topk ratio must be in (0, 1]"),
    (["run", "--strategy", "pipeline", "--compression", "powersgd:4"], "does not apply to pipeline"),
    (["run", "--sync", "local-sgd"], "sync local-sgd needs a count, e.g. local-sgd:4"),
    (["run", "--sync", "local-sgd:2", "--compression", "fp16"], "use compression='none' with it"),
    (["run", "--strategy", "pipeline", "--schedule", "zigzag"], "schedule must be one of gpipe, 1f1b, interleaved"),
    (["run", "--microbatches", "4"], "microbatches apply to pipelines only (strategy is ddp)"),
    (["run", "--strategy", "pipeline", "--model", "gpt", "--microbatches", "5"], "micro-batches do not divide"),
    (["run", "--split", "layers.2"], "split applies to pipelines only (strategy is ddp)"),
    (["run", "--tp-plan", "fc1"], "expected NAME=colwise|rowwise or auto, got 'fc1'"),
    (["run", "--strategy", "tensor", "--tp-plan", "fc1=diagonal"],
     "tp_plan style of 'fc1' must be one of colwise, rowwise"),
    (["run", "--strategy", "tensor", "--model", "cnn"], "tensor parallelism has no plan for cnn"),
    (["run", "--strategy", "hybrid", "--hybrid", "x+y"], "hybrid must be one of ddp+tensor, fsdp+tensor, pipeline+ddp"),
    (["run", "--strategy", "hybrid", "--workers", "4", "--mesh", "2x3"], "has 6 ranks but workers=4"),
    (["run", "--mesh", "2x2"], "mesh applies to strategy hybrid only (strategy is ddp)"),
    (["run", "--device", "tpu"], "device must be one of auto, cpu, cuda (got 'tpu')"),
    (["run", "--device", "cpu", "--gpus", "0"], "gpus= was given with device='cpu'; drop one of them"),
    (["run", "--gpus", "x"], "expected comma-separated integers, got 'x'"),
    (["run", "--bogus"], "unrecognized arguments: --bogus"),
    (["bench"], "the following arguments are required: bench"),
    (["bench", "disk"], "invalid choice: 'disk'"),
    (["bench", "comm", "--workers", "1"], "the communication benchmark needs workers >= 2 (got 1)"),
    (["bench", "comm", "--workers", "9999"], "use workers <="),
    (["bench", "comm", "--sizes", "1KB,lots"], "a message size must be a positive number of bytes"),
    (["bench", "comm", "--collectives", "gossip"], "unknown collective 'gossip'; use any of: all_reduce"),
    (["bench", "comm", "--repeats", "0"], "repeats must be an integer >= 1 (got 0)"),
    (["bench", "comm", "--warmup", "-1"], "warmup must be an integer >= 0 (got -1)"),
    (["bench", "comm", "--dtype", "int8"], "dtype must be one of float32, float16, bfloat16 (got 'int8')"),
    (["bench", "comm", "--sizes", "1MB", "--max-size", "1KB"], "no message size is at most max_size='1KB'"),
    (["bench", "comm", "--device", "tpu"], "device must be one of auto, cpu, cuda (got 'tpu')"),
    (["demo", "--workers", "2,4"], "demo --workers must include 1 (the baseline), e.g. --workers 1,2"),
    (["demo", "--workers", "1,x"], "expected comma-separated integers, got '1,x'"),
    (["demo", "--steps", "2"], "demo --steps must be >= 3 (2 are warm-up)"),
    (["demo", "--workers", "1,999"], "use workers <="),
    (["run", "--lr", "inf"], "lr must be a positive number (got inf)"),
    (["run", "--bucket-mb", "inf"], "bucket_mb must be a positive number of MB (got inf)"),
    (["run", "--runs-dir", "A_FILE"], "is a file; give a folder for the run store"),
    (["bench", "comm", "--runs-dir", "A_FILE"], "is a file; give a folder for the run store"),
    (["bench", "comm", "--collectives", ","], "collectives is empty; use any of: all_reduce"),
    (["bench", "comm", "--sizes", ","], "sizes is empty; give message sizes"),
    (["run", "--engines", "pbs"], "engines must be one of local, mpi, slurm, ssh, attach (got 'pbs')"),
    (["demo", "--link", "fast"], "is not RATE[,DELAY]"),
    (["bench", "comm", "--engines", "mpi", "--link", "1gbit"], "drop link, or use engines='local'"),
    (["run", "--cluster-id", "x"], "use engines='attach'"),
    (["sweep", "--device", "cpu", "--repeats", "21"], "repeats must be a whole number from 1 to 20 (got 21)"),
    pytest.param(["run", "--device", "cuda"], "use device cpu or auto", marks=cpu_only),
    pytest.param(["run", "--gpus", "0"], "gpus=[0] was given, but no GPU is visible", marks=cpu_only),
]


@pytest.mark.parametrize("argv, fix", CLI)
def test_cli_is_one_line_exit_2_and_starts_nothing(nothing_starts, tmp_path, capsys, argv, fix):
    if "A_FILE" in argv:
        (tmp_path / "a-file").write_text("not a folder")
        argv = [str(tmp_path / "a-file") if a == "A_FILE" else a for a in argv]
    elif argv[:1] in (["run"], ["demo"]) or argv[:2] == ["bench", "comm"]:
        argv = [*argv, "--runs-dir", str(nothing_starts)]
    code = cli.main(argv)
    out = capsys.readouterr()
    assert code == 2 and out.out == ""
    lines = out.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("parakit: error: "), out.err
    one_line_naming(lines[0], fix)


# -- the magics ----------------------------------------------------------------------------------
MAGIC = [
    ("fly", "unknown subcommand 'fly'; use one of: start, status, stop, restart, run, sweep"),
    ("run --steps 0", "steps must be >= 1 (got 0)"),
    ("run --steps x", "argument --steps: invalid int value: 'x' (see: %parakit run -h)"),
    ("run --lr -1", "lr must be a positive number (got -1.0)"),
    ("run --compression zip", "compression must be one of none, fp16, bf16, powersgd, topk, randomk"),
    ("run --cpu --precision tf32", "tf32 is a GPU tensor-core format; on CPU use fp32 or bf16"),
    ("run --cpu --workers 2 --batch-size 8 --sync accumulate:3", "use a batch_size that is a multiple of 6"),
    ("run --cpu --strategy pipeline --workers 4", "pipeline of 4 stages but mlp has 3 blocks"),
    ("run --mesh 2x2", "mesh applies to strategy hybrid only (strategy is ddp)"),
    ("run --model-option depth=x", "expected KEY=INT, e.g. width=256, got 'depth=x'"),
    ("run --cpu --gpus 0", "--cpu and --gpus do not go together; drop one of them"),
    ("run --cpu --workers 0", "workers must be >= 1 (got 0)"),
    ("run --cpu --workers 999", "use workers <="),
    ("sweep --cpu --strategy ddp,nosuch", "1 of 2 combinations do not fit"),
    ("sweep --cpu --workers 0,1", "workers must be >= 1 (got 0); drop them from the lists"),
    ("sweep --cpu --compression powersgd:0", "powersgd rank must be >= 1 (got 0)"),
    ("sweep --cpu --repeats 0", "repeats must be a whole number from 1 to 20 (got 0)"),
    ("start -n 0", "-n must be >= 1 (got 0)"),
    ("start -n 999 --cpu", "use workers <="),
    ("start --gpus x", "expected a comma-separated list of int, e.g. 1,2 (got 'x')"),
    ("restart -n 0", "-n must be >= 1 (got 0)"),
    ("runs --last 0", "--last must be >= 1 (got 0)"),
    ("runs --last x", "argument --last: invalid int value: 'x'"),
    ("plot loss", "no runs in"),
    ("plot nosuch", "no plot 'nosuch'; available: "),
    ("status now", "unrecognized arguments: now (see: %parakit status -h)"),
    ("bench disk", "invalid choice: 'disk'"),
    ("bench comm --workers 1", "the communication benchmark needs workers >= 2 (got 1)"),
    ("bench comm --repeats 0", "repeats must be an integer >= 1 (got 0)"),
    ("bench comm --dtype int8", "dtype must be one of float32, float16, bfloat16 (got 'int8')"),
    ("bench comm --collectives gossip", "unknown collective 'gossip'"),
    ("run --cpu --lr inf", "lr must be a positive number (got inf)"),
    ("run --cpu --bucket-mb inf", "bucket_mb must be a positive number of MB (got inf)"),
    ("bench comm --cpu --workers 9999", "use workers <="),
    ("start --engines pbs", "engines must be one of local, mpi, slurm, ssh, attach (got 'pbs')"),
    ("start --link 1gbit,fast", "is not RATE[,DELAY]"),
    ("start --engines attach --link 1gbit", "drop link, or use engines='local'"),
    ("restart --ifname 'a b'", "is not a network interface name"),
    pytest.param("start --gpus 0", "gpus=[0] was given, but no GPU is visible", marks=cpu_only),
]


@pytest.fixture(scope="module")
def shell():
    return InteractiveShell.instance()


@pytest.mark.parametrize("line, fix", MAGIC)
def test_magic_is_one_line_and_starts_nothing(nothing_starts, shell, line, fix):
    fresh = magics.ParakitMagics(shell)  # no engines yet: a mistake must not start them
    fresh._runs_dir = nothing_starts
    with pytest.raises(UsageError) as caught:
        fresh.parakit(line)
    one_line_naming(str(caught.value), fix)
    assert fresh.session is None


@pytest.mark.parametrize("n, fix", [
    ("0", "-n must be >= 1 (got 0)"),
    ("x", "argument -n/--workers: invalid int value: 'x'"),
    ("999", "use workers <="),
])
def test_cell_magic_is_one_line_and_starts_nothing(nothing_starts, shell, n, fix):
    fresh = magics.ParakitMagics(shell)
    fresh._runs_dir = nothing_starts
    with pytest.raises(UsageError) as caught:
        fresh.parakit(f"-n {n}", "print(rank)")
    one_line_naming(str(caught.value), fix)
    assert fresh.session is None


@pytest.mark.parametrize("line, fix", [
    ("run --steps 0", "steps must be >= 1 (got 0)"),
    ("run --strategy single --workers 2", "use strategy ddp for more"),
    ("run --workers 3 --batch-size 64", "use a multiple of 3"),
    ("run --precision fp16", "on CPU use bf16 or fp32"),
    ("sweep --strategy ddp,tensor --model cnn", "tensor parallelism has no plan for cnn"),
    ("bench comm --repeats 0", "repeats must be an integer >= 1 (got 0)"),
    ("bench comm --workers 999", "use workers <="),
    ("start -n 3", "engines are already running (2 engine(s) on CPU"),
    ("run --gpus 0", "the engines run on 2 engine(s) on CPU"),
])
def test_magic_on_running_engines_leaves_them_alone(session, shell, line, fix):
    m = magics.ParakitMagics(shell)
    m.session = session  # the module's engines, as after %parakit start
    before = untouched(session)
    try:
        with pytest.raises(UsageError) as caught:
            m.parakit(line)
    finally:
        m.session = None  # the fixture closes them
    one_line_naming(str(caught.value), fix)
    assert untouched(session) == before


# -- the panel -----------------------------------------------------------------------------------
PANEL = [
    (dict(strategy="tensor", model="cnn"), "tensor parallelism has no plan for cnn"),
    (dict(workers=2, batch_size=7), "batch_size 7 does not divide over 2 data-parallel ranks; use a multiple of 2"),
    (dict(strategy="fsdp", compression="powersgd"), "compression powersgd:4 does not apply to fsdp"),
    (dict(precision="fp16"), "fp16 with loss scaling needs a GPU; on CPU use bf16 or fp32"),
    (dict(precision="tf32"), "tf32 is a GPU tensor-core format; on CPU use fp32 or bf16"),
    (dict(strategy="pipeline", workers=4), "pipeline of 4 stages but mlp has 3 blocks"),
    (dict(strategy="hybrid", workers=2), "hybrid needs an even number of workers &gt;= 4 (got 2)"),
    (dict(strategy="single", workers=2), "strategy single runs on 1 worker (got workers=2)"),
    (dict(steps=2), "warmup_steps (2) must be smaller than steps (2)"),
]


@pytest.fixture(scope="module")
def panel(session):
    p = Panel(session)
    yield p
    p.close()


@pytest.mark.parametrize("values, fix", PANEL)
def test_panel_disables_run_and_says_why(panel, session, values, fix):
    controls = [panel.strategy, panel.precision, panel.compression, panel.model, panel.workers, panel.steps,
                panel.batch_size]
    defaults = {c: c.value for c in controls}
    before = untouched(session)
    try:
        for name, value in values.items():
            getattr(panel, name).value = value
        assert panel.run_button.disabled
        one_line_naming(panel.problem.value, fix)
        panel.run_button.click()  # reaches the handler even when disabled
        assert not panel.running and panel.results == []
        assert untouched(session) == before
    finally:
        for control, value in defaults.items():
            control.value = value
    assert not panel.run_button.disabled and panel.problem.value == ""
