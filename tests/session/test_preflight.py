"""Bad input at every public entry point. Each mistake is one line that names the fix, and
nothing starts: no engine, no process, no file.

Every refusal is tested once, on the one pre-launch check (session/preflight.py: the engines'
settings, every RunConfig field, the benchmark's settings, an engine count). Each front end
(Session's constructor and methods here; the CLI, the magics and the panel in
tests/frontends/test_refusals.py) is then tested for handing its input to that check and saying
the answer as it should.

A case parakit does not refuse yet is a strict xfail (``gap``): when it is fixed its test
passes, and pytest asks for the mark to go."""

from __future__ import annotations

import math

import pytest

import parakit
from parakit.session import preflight

from refusal_helpers import cpu_only, gap, nothing_starts, one_line_naming, own_data, own_model, untouched  # noqa: F401


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
    (dict(strategy=3), "strategy must be one of single, ddp, fsdp, pipeline, tensor, hybrid, expert, context (got 3)"),
    (dict(strategy="fsdpp"), "strategy must be one of single, ddp, fsdp, pipeline, tensor, hybrid, expert, context (got 'fsdpp')"),
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
    (dict(stepz=3), "unknown setting 'stepz'; the settings are: activation_checkpointing, batch_size, blocks, bucket_mb"),
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
