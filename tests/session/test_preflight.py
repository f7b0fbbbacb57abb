"""Bad input at every public entry point. Each mistake is one line that names the fix, and
nothing starts: no engine, no process, no file.

Every refusal is tested once, on the one pre-launch check (session/preflight.py: the engines'
settings, every RunConfig field, the benchmark's settings, an engine count). Each front end
(Session's constructor and methods, the CLI, the magics, the panel) is then tested for handing
its input to that check and saying the answer as it should.

A case parakit does not refuse yet is a strict xfail (``gap``): when it is fixed its test
passes, and pytest asks for the mark to go."""

from __future__ import annotations

import math
import tempfile

import psutil
import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from torch import nn

import parakit
from parakit.frontends import cli, magics
from parakit.cluster import placement
from parakit.cluster.engines import EngineSet
from parakit.frontends.panel import Panel
from parakit.session import preflight

NO_GPU = not placement.host_facts().gpus
cpu_only = pytest.mark.skipif(not NO_GPU, reason="a machine without a GPU refuses device='cuda'")


def gap(reason: str) -> pytest.MarkDecorator:
    """A case parakit gets wrong today (see docs/reliability.md)."""
    return pytest.mark.xfail(strict=True, reason=reason)


def one_line_naming(message: str, fix: str) -> None:
    assert "\n" not in message.strip(), message
    assert fix in message, message


def own_model():
    return nn.Linear(4, 2)


def own_data(step, global_batch_size):
    import torch

    return torch.randn(global_batch_size, 4), torch.randint(0, 2, (global_batch_size,))


@pytest.fixture
def nothing_starts(monkeypatch, tmp_path):
    """Refuses to start engines (a value that gets through fails the test, at once and with no
    process started) and checks afterwards that no process and no file appeared."""
    def refuse(self, n):
        raise AssertionError(f"a bad value got through: {n} engine(s) were about to start")

    monkeypatch.setattr(EngineSet, "start", refuse)
    scratch = tmp_path / "tmp"  # where a cluster's folder would go
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    runs = tmp_path / "runs"
    children = {p.pid for p in psutil.Process().children()}
    yield runs
    assert {p.pid for p in psutil.Process().children()} <= children
    assert list(scratch.iterdir()) == [] and not runs.exists()


# -- Session(...) ------------------------------------------------------------------------------
SESSION = [
    (dict(workers=0), "workers must be an integer >= 1 (got 0)"),
    (dict(workers=-2), "workers must be an integer >= 1 (got -2)"),
    (dict(workers=1.5), "workers must be an integer >= 1 (got 1.5)"),
    (dict(workers="2"), "workers must be an integer >= 1 (got '2')"),
    (dict(workers=True), "workers must be an integer >= 1 (got True)"),
    (dict(workers=10**6), "use workers <="),
    (dict(device="tpu"), "device must be one of auto, cpu, cuda (got 'tpu')"),
    (dict(device=3), "device must be one of auto, cpu, cuda (got 3)"),
    (dict(device=None), "device must be one of auto, cpu, cuda (got None)"),
    (dict(device="cpu", gpus=[0]), "gpus= was given with device='cpu'; drop one of them"),
    pytest.param(dict(device="cuda"), "use device cpu or auto", marks=cpu_only),
    (dict(auto_restart="yes"), "auto_restart must be True or False (got 'yes')"),
    (dict(hang_timeout_s=0), "hang_timeout_s must be a positive number of seconds (got 0)"),
    (dict(hang_timeout_s="60"), "hang_timeout_s must be a positive number of seconds (got '60')"),
    (dict(runs_dir="A_FILE"), "is a file; give a folder for the run store"),
    pytest.param(dict(device="auto", gpus=[0]), "gpus=[0] was given, but no GPU is visible", marks=cpu_only),
    (dict(engines="pbs"), "engines must be one of local, mpi, slurm, ssh, attach (got 'pbs')"),
    (dict(engines="mpi", link="1gbit"), "drop link, or use engines='local'"),
    (dict(link="fast"), "is not RATE[,DELAY]"),
    (dict(link=1e9), "link must be text such as '1gbit,1ms'"),
    (dict(link="1gbit", ifname="eth0"), "link= makes its own interfaces; drop ifname"),
    (dict(cluster_id="abc"), "use engines='attach'"),
    (dict(engines="attach", profile=""), "profile must be a non-empty string"),
    (dict(engines="ssh", ifname="eth0 x"), "is not a network interface name"),
    (dict(gpus="0"), "gpus must be a list of GPU indices"),
]


SESSION_ONLY = {"auto_restart", "hang_timeout_s"}  # the Session's own, not the engines'


def _session_only(case) -> bool:
    kwargs = case.values[0] if hasattr(case, "values") else case[0]
    return bool(SESSION_ONLY & set(kwargs))


@pytest.mark.parametrize("kwargs, fix", [case for case in SESSION if not _session_only(case)])
def test_preflight_refuses_engine_settings(tmp_path, kwargs, fix):
    if kwargs.get("runs_dir") == "A_FILE":
        (tmp_path / "a-file").write_text("not a folder")
        kwargs = {**kwargs, "runs_dir": tmp_path / "a-file"}
    with pytest.raises(ValueError) as caught:
        preflight.engines_here(**{"device": "cpu", **kwargs})
    one_line_naming(str(caught.value), fix)


@pytest.mark.parametrize("kwargs, fix", [case for case in SESSION if _session_only(case)] + [
    (dict(workers=0), "workers must be an integer >= 1 (got 0)"),
    (dict(link="fast"), "is not RATE[,DELAY]"),
    (dict(runs_dir="A_FILE"), "is a file; give a folder for the run store"),
])
def test_session_refuses_before_starting_anything(nothing_starts, tmp_path, kwargs, fix):
    if kwargs.get("runs_dir") == "A_FILE":
        (tmp_path / "a-file").write_text("not a folder")
        kwargs = {**kwargs, "runs_dir": tmp_path / "a-file"}
    kwargs = {"device": "cpu", "runs_dir": nothing_starts, "progress": False, **kwargs}
    with pytest.raises(ValueError) as caught:
        parakit.Session(**kwargs)
    one_line_naming(str(caught.value), fix)


# -- Session.run(...): every RunConfig field ----------------------------------------------------
RUN = [
    (dict(steps="3"), "steps must be an integer (got '3')"),
    (dict(steps=0), "steps must be >= 1 (got 0)"),
    (dict(steps=2.0), "steps must be an integer (got 2.0)"),
    (dict(warmup_steps=-1), "warmup_steps must be >= 0 (got -1)"),
    (dict(steps=5, warmup_steps=5), "warmup_steps (5) must be smaller than steps (5)"),
    (dict(batch_size=0), "batch_size must be >= 1 (got 0)"),
    (dict(batch_size=7, workers=2), "use a multiple of 2"),
    (dict(lr=0), "lr must be a positive number (got 0)"),
    (dict(lr="fast"), "lr must be a positive number (got 'fast')"),
    (dict(lr=math.nan), "lr must be a positive number (got nan)"),
    (dict(seed=-1), "seed must be >= 0 (got -1)"),
    (dict(seed=1.5), "seed must be an integer (got 1.5)"),
    (dict(profile_every=-1), "profile_every must be >= 0 (got -1)"),
    (dict(bucket_mb=0), "bucket_mb must be a positive number of MB (got 0)"),
    (dict(bucket_mb="big"), "bucket_mb must be a positive number of MB (got 'big')"),
    (dict(error_feedback="no"), "error_feedback must be True or False (got 'no')"),
    (dict(model=123), "model must be mlp, cnn, gpt or a zero-argument callable returning an nn.Module"),
    (dict(model="resnet"), "model must be one of mlp, cnn, gpt (got 'resnet')"),
    (dict(model_options={"width": 0}), "model option width must be >= 1 (got 0)"),
    (dict(model_options={"wide": 3}), "model mlp has no option 'wide'; options: width, depth, in_features, classes"),
    (dict(model="gpt", model_options={"width": 100, "heads": 3}), "gpt width (100) must be divisible by heads (3)"),
    (dict(model=own_model), "a model of your own needs data=: a callable or a Dataset"),
    (dict(model=own_model, data=own_data, model_options={"width": 3}), "model_options apply to built-in models only"),
    (dict(loss="mse"), "loss must be a callable (outputs, targets) -> scalar tensor"),
    (dict(strategy=3), "strategy must be one of single, ddp, fsdp, pipeline, tensor, hybrid (got 3)"),
    (dict(strategy="fsdpp"), "strategy must be one of single, ddp, fsdp, pipeline, tensor, hybrid (got 'fsdpp')"),
    (dict(workers=0), "workers must be >= 1 (got 0)"),
    (dict(workers="2"), "workers must be an integer (got '2')"),
    (dict(workers=True), "workers must be an integer (got True)"),
    (dict(workers=2.0), "workers must be an integer (got 2.0)"),
    (dict(workers=10**6), "use workers <="),
    (dict(strategy="single", workers=2), "strategy single runs on 1 worker (got workers=2); use strategy ddp for more"),
    (dict(precision="fp4"), "precision must be one of fp32, tf32, fp16, bf16, bf16-pure, fp8 (got 'fp4')"),
    (dict(precision="fp8"), "fp8 needs an NVIDIA GPU of compute capability 8.9 or later (Ada, Hopper); on CPU use "
                            "bf16 or fp32"),
    (dict(precision="fp16"), "fp16 with loss scaling needs a GPU; on CPU use bf16 or fp32"),
    (dict(precision="tf32"), "tf32 is a GPU tensor-core format; on CPU use fp32 or bf16"),
    (dict(compression="zip"), "compression must be one of none, fp16, bf16, powersgd, topk, randomk (got 'zip')"),
    (dict(compression="powersgd:x"), "powersgd rank must be a number, e.g. powersgd:4 (got 'x')"),
    (dict(compression="powersgd:0"), "powersgd rank must be >= 1 (got 0)"),
    (dict(compression="topk:0"), "topk ratio must be in (0, 1], e.g. topk:0.01 (got 0.0)"),
    (dict(compression="randomk:1.5"), "randomk ratio must be in (0, 1], e.g. randomk:0.01 (got 1.5)"),
    (dict(compression="fp16:3"), "compression fp16 takes no value (got 'fp16:3')"),
    (dict(compression="powersgd:4", strategy="single"),
     "compression powersgd:4 does not apply to single; it works with ddp"),
    (dict(compression="bf16", strategy="pipeline"), "does not apply to pipeline; it works with ddp, fsdp, fsdp+tensor"),
    (dict(sync="sometimes"), "sync must be one of every-step, local-sgd, accumulate, delayed, diloco, "
                               "streaming-diloco (got 'sometimes')"),
    (dict(sync="local-sgd"), "sync local-sgd needs a count, e.g. local-sgd:4 (H >= 1)"),
    (dict(sync="local-sgd:0"), "local-sgd H must be >= 1 (got 0)"),
    (dict(sync="every-step:2"), "sync every-step takes no value (got 'every-step:2')"),
    (dict(sync="accumulate:3", workers=2), "use a batch_size that is a multiple of 6"),
    (dict(sync="local-sgd:2", strategy="fsdp"), "sync local-sgd:2 applies to ddp, not fsdp"),
    (dict(sync="local-sgd:4", compression="fp16"), "use compression='none' with it"),
    (dict(schedule="zigzag"), "schedule must be one of gpipe, 1f1b, interleaved (got 'zigzag')"),
    (dict(microbatches=4), "microbatches apply to pipelines only (strategy is ddp)"),
    (dict(strategy="pipeline", microbatches=0), "microbatches must be >= 1 (got 0)"),
    (dict(strategy="pipeline", model="gpt", microbatches=5),
     "use a batch_size that is a multiple of 5, or other microbatches"),
    (dict(strategy="pipeline", model="gpt", schedule="1f1b", microbatches=1, workers=2),
     "schedule 1f1b needs at least as many micro-batches as pipeline ranks (2)"),
    (dict(strategy="pipeline", precision="fp16"), "use bf16 (no scaling needed) with pipelines"),
    (dict(strategy="pipeline", workers=4),
     "pipeline of 4 stages but mlp has 3 blocks; use fewer workers or a deeper model"),
    (dict(split=["layers.2"]), "split applies to pipelines only (strategy is ddp)"),
    (dict(strategy="pipeline", model=own_model, data=own_data), "pipeline needs split points for a model of your own"),
    (dict(strategy="pipeline", model=own_model, data=own_data, split=["a", "b"], workers=2), "give 1 split points"),
    (dict(tp_plan={"fc1": "colwise"}), "tp_plan applies to tensor parallelism only (strategy is ddp)"),
    (dict(strategy="tensor", model=own_model, data=own_data, tp_plan={"fc1": "diagonal"}),
     "tp_plan style of 'fc1' must be one of colwise, rowwise (got 'diagonal')"),
    (dict(strategy="tensor", model="cnn"), "tensor parallelism has no plan for cnn; use gpt or mlp"),
    (dict(strategy="tensor", model="mlp", model_options={"width": 5}), "use a width that is a multiple of 2"),
    (dict(strategy="hybrid", hybrid="ddp+pipeline", workers=4),
     "hybrid must be one of ddp+tensor, fsdp+tensor, pipeline+ddp"),
    (dict(strategy="hybrid", workers=2), "hybrid needs an even number of workers >= 4 (got 2), or mesh='AxB'"),
    (dict(strategy="hybrid", mesh="2x3", workers=4), "mesh 2x3 has 6 ranks but workers=4; use workers=6"),
    (dict(strategy="hybrid", mesh="axb"), "mesh must look like 2x2 (fsdp x tensor), got 'axb'"),
    (dict(mesh="2x2"), "mesh applies to strategy hybrid only (strategy is ddp)"),
    (dict(stepz=3), "unknown setting 'stepz'; the settings are: activation_checkpointing, batch_size, bucket_mb"),
    (dict(lr=math.inf), "lr must be a positive number (got inf)"),
    (dict(bucket_mb=math.inf), "bucket_mb must be a positive number of MB (got inf)"),
    (dict(bucket_mb=4, strategy="fsdp"), "strategy fsdp has none (use strategy ddp)"),
    (dict(data="abc"), "data must be a callable (step, global_batch_size) -> (inputs, targets) or a torch Dataset"),
    (dict(model_options="width=3"), "model_options must be a dict, e.g. {'width': 256} (got 'width=3')"),
    (dict(strategy="pipeline", split=5), "split must be module names, e.g. ['layers.2'] (got 5)"),
    (dict(strategy="tensor", model=own_model, data=own_data, tp_plan="fc1"), "tp_plan must be a dict, e.g."),
    (dict(strategy="hybrid", mesh=5), "mesh must look like 2x2 (fsdp x tensor), got 5"),
    (dict(strategy="hybrid", mesh=("a", "b")), "mesh must look like 2x2 (fsdp x tensor), got ('a', 'b')"),
    (dict(strategy="hybrid", mesh=(2.5, 2)), "mesh must look like 2x2 (fsdp x tensor), got (2.5, 2)"),
]
# Accepted, and only the engines find out: checked with Session.config (what Session.run checks
# first), so what gets through is not run.
RUN_GAPS = [
    pytest.param(dict(strategy="pipeline", split="x"), "split",
                 marks=gap("accepted: 'split names modules the model does not have: x' on the engines")),
]


def untouched(session):
    """What a refused setting must leave as it was: engines, their group, the run store."""
    return session._engines.pids(), session._engines.group, sorted(p.name for p in session.runs_dir.rglob("*"))


@pytest.fixture(scope="module")
def two_cpu_engines():
    """What a 2-engine CPU session is checked against, without starting it."""
    return preflight.engines_here(workers=2, device="cpu")


@pytest.mark.parametrize("settings, fix", RUN + RUN_GAPS)
def test_preflight_refuses_run_settings(two_cpu_engines, settings, fix):
    with pytest.raises(ValueError) as caught:
        preflight.check_run(two_cpu_engines, **settings)
    one_line_naming(str(caught.value), fix)


# One of each kind: a setting RunConfig refuses, one the engines' device refuses, one this
# machine's size refuses; the rest go through the same call.
RUN_WIRING = [RUN[0], (dict(precision="fp16"), "fp16 with loss scaling needs a GPU"), (dict(workers=10**6), "use workers <=")]


@pytest.mark.parametrize("settings, fix", RUN_WIRING)
def test_run_refuses_before_touching_an_engine(session, settings, fix):
    before = untouched(session)
    with pytest.raises(ValueError) as caught:
        session.run(**settings)
    one_line_naming(str(caught.value), fix)
    assert untouched(session) == before


# -- Session.bench_comm(...) and Session.execute(...) ------------------------------------------
BENCH = [
    (dict(workers=1), "the communication benchmark needs workers >= 2 (got 1)"),
    (dict(workers="2"), "the communication benchmark needs workers >= 2 (got '2')"),
    (dict(workers=10**6), "use workers <="),
    (dict(sizes=["lots"]),
     "a message size must be a positive number of bytes, e.g. 4096, '64KB' or '16MB' (got 'lots')"),
    (dict(sizes=[0]), "a message size must be a positive number of bytes"),
    (dict(sizes=["-5KB"]), "a message size must be a positive number of bytes"),
    (dict(collectives=["gossip"]), "unknown collective 'gossip'; use any of: all_reduce, all_gather"),
    (dict(repeats=0), "repeats must be an integer >= 1 (got 0)"),
    (dict(repeats="3"), "repeats must be an integer >= 1 (got '3')"),
    (dict(warmup=-1), "warmup must be an integer >= 0 (got -1)"),
    (dict(dtype="int8"), "dtype must be one of float32, float16, bfloat16 (got 'int8')"),
    (dict(max_size="lots"), "a message size must be a positive number of bytes"),
    (dict(sizes=["1MB"], max_size="1KB"), "no message size is at most max_size='1KB'"),
    (dict(sizes=5.5), "sizes must be a list, e.g. sizes=['1KB', '1MB'] (got 5.5)"),
    (dict(sizes=[]), "sizes is empty; give message sizes such as ['1KB', '1MB'] (or leave it out)"),
    (dict(collectives=5), "unknown collective 5; use any of: all_reduce"),
    (dict(collectives=[]), "collectives is empty; use any of: all_reduce"),
]


@pytest.mark.parametrize("settings, fix", BENCH)
def test_preflight_refuses_bench_settings(two_cpu_engines, settings, fix):
    with pytest.raises(ValueError) as caught:
        preflight.check_bench(two_cpu_engines, **settings)
    one_line_naming(str(caught.value), fix)


@pytest.mark.parametrize("settings, fix", [BENCH[0], BENCH[2], BENCH[3]])
def test_bench_comm_refuses_before_touching_an_engine(session, settings, fix):
    before = untouched(session)
    with pytest.raises(ValueError) as caught:
        session.bench_comm(**settings)
    one_line_naming(str(caught.value), fix)
    assert untouched(session) == before


COUNTS = [
    (0, "workers must be an integer >= 1 (got 0)"),
    ("2", "workers must be an integer >= 1 (got '2')"),
    (10**6, "use workers <="),
]


@pytest.mark.parametrize("workers, fix", COUNTS)
def test_preflight_refuses_engine_counts(two_cpu_engines, workers, fix):
    with pytest.raises(ValueError) as caught:
        preflight.check_count(two_cpu_engines, workers)
    one_line_naming(str(caught.value), fix)


@pytest.mark.parametrize("workers, fix", [COUNTS[0], COUNTS[2]])
def test_execute_refuses_before_touching_an_engine(session, workers, fix):
    before = untouched(session)
    with pytest.raises(ValueError) as caught:
        session.execute("print(rank)", workers)
    one_line_naming(str(caught.value), fix)
    assert untouched(session) == before


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
    (["run", "--strategy", "fsdpp"], "strategy must be one of single, ddp, fsdp, pipeline, tensor, hybrid"),
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
    (["run", "--tp-plan", "fc1"], "expected NAME=colwise|rowwise, got 'fc1'"),
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
