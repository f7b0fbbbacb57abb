"""The option groups every front end shares: the settings of a run, of the engines, of a
communication benchmark, of the advisor and the prices runs are costed with, as argparse
arguments and back as the keyword arguments Session, ``Session.bench_comm`` and
``parakit.advise`` take. ``parakit`` (the command) and ``%parakit`` (the magics) add the same
groups, so an option means the same in both. Imports no front end.
"""

from __future__ import annotations

import argparse
import copy
import contextlib
import dataclasses
import json
import math
from collections.abc import Callable, Mapping
from typing import Any

from parakit.config.choices import is_number
from parakit.config.own_model import AUTO_PLAN
from parakit.config.hosts import Launcher
from parakit.config.prices import Prices
from parakit.config.recovery import OnFailure
from parakit.config.switch import SWITCHABLE, parse_switch
from parakit.config.run import Hybrid, Precision, Schedule, Strategy, Workload
from parakit.records.store import DEFAULT_RUNS_DIR


class UsageError(Exception):
    """A mistake in the command line: printed as one line, exit code 2."""


def int_list(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def model_option(text: str) -> tuple[str, int]:
    key, sep, value = text.partition("=")
    try:
        return key.strip(), int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected KEY=INT, e.g. width=256, got {text!r}") from None


def add_engine_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto (GPU when present), cpu or cuda")
    p.add_argument("--gpus", type=int_list, help="GPU indices to pin engines to, e.g. 0,2")
    p.add_argument("--runs-dir", default=DEFAULT_RUNS_DIR, help="run store folder (default ./parakit-runs)")
    add_launch_options(p)


def add_launch_options(p: argparse.ArgumentParser) -> None:
    """Where engines run; shared by the commands and ``%parakit start``."""
    p.add_argument("--engines", dest="launcher", default="local", metavar="LAUNCHER",
                   help=f"how engines start: {Launcher.allowed()} (default local; see docs/multi-host.md)")
    p.add_argument("--profile", default=None, help="ipyparallel profile name or folder (mpi, slurm, ssh, attach)")
    p.add_argument("--cluster-id", default=None, help="the running cluster to attach to, or the id of a new one")
    p.add_argument("--ifname", default=None, help="network interface between hosts, e.g. eth0 or ib0")
    p.add_argument("--link", default=None, metavar="RATE,DELAY",
                   help="local engines on two hosts joined by a simulated link, e.g. 1gbit,1ms (root only)")


def launch_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The launch options as Session takes them (session/preflight.py checks them)."""
    return {"engines": args.launcher, "profile": args.profile, "cluster_id": args.cluster_id,
            "ifname": args.ifname, "link": args.link}


def engine_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The engine options (``add_engine_options``) as Session takes them."""
    return {"device": args.device, "gpus": args.gpus, "runs_dir": args.runs_dir, **launch_settings(args)}


def comma_list(kind: type) -> Callable[[str], list]:
    """An argparse type: "1,2,4" -> [1, 2, 4] (or strings), one line naming the mistake."""
    def parse(text: str) -> list:
        try:
            return [kind(x.strip()) for x in text.split(",") if x.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected a comma-separated list of {kind.__name__}, e.g. 1,2 (got {text!r})"
            ) from None

    return parse


def str_list(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def plan_entry(text: str) -> tuple[str, str | None]:
    """One ``--tp-plan NAME=STYLE``, or ``--tp-plan auto`` (the model's own plan: ("auto", None))."""
    if text.strip() == AUTO_PLAN:
        return AUTO_PLAN, None
    name, sep, style = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected NAME=colwise|rowwise or auto, got {text!r}")
    return name.strip(), style.strip()


def tp_plan_setting(entries: list[tuple[str, str | None]] | None) -> dict[str, str] | str | None:
    """RunConfig's tp_plan from the ``--tp-plan`` entries: "auto" alone, or a NAME -> STYLE dict."""
    if not entries:
        return None
    if any(name == AUTO_PLAN for name, _ in entries):
        if len(entries) > 1:
            raise ValueError("--tp-plan auto takes the model's own plan: give it alone, without NAME=STYLE entries")
        return AUTO_PLAN
    return dict(entries)


def add_run_options(p: argparse.ArgumentParser) -> None:
    """The settings of one run; shared by ``parakit run`` and the ``%parakit run`` magic."""
    p.add_argument("--workers", type=int, default=None, help="ranks (default: 1 for single, else 2 or one per GPU)")
    p.add_argument("--strategy", default="ddp", help=f"{Strategy.allowed()}")
    p.add_argument("--model", default="mlp",
                   help="mlp, cnn, gpt, or your own: a name in the notebook (magics) or package.module:name")
    p.add_argument("--model-option", type=model_option, action="append", default=[],
                   metavar="KEY=INT", help="size of the built-in model, e.g. --model-option width=256; "
                   "gpt's experts=E (and top_k=K) make each block a mixture of experts")
    p.add_argument("--data", default=None,
                   help="your own data: (step, global_batch_size) -> (inputs, targets) or a Dataset, by name")
    p.add_argument("--loss", default=None, help="your own loss: (outputs, targets) -> scalar, by name")
    p.add_argument("--precision", default="fp32", help=f"{Precision.allowed()}")
    p.add_argument("--compression", default="none", help="none, fp16, bf16, powersgd:R, topk:K, randomk:K")
    p.add_argument("--no-error-feedback", dest="error_feedback", action="store_false",
                   help="topk/randomk: drop what compression leaves out instead of carrying it over")
    p.add_argument("--sync", default="every-step",
                   help="every-step, local-sgd:H, accumulate:K, delayed:D, diloco:H or streaming-diloco:H,F")
    p.add_argument("--outer-lr", type=float, default=None, help="diloco's outer learning rate (default 0.7)")
    p.add_argument("--outer-momentum", type=float, default=None,
                   help="diloco's outer Nesterov momentum, in [0, 1) (default 0.9)")
    p.add_argument("--schedule", default="gpipe", help=f"pipeline schedule: {Schedule.allowed()}")
    p.add_argument("--microbatches", type=int, default=None, help="pipeline micro-batches per step")
    p.add_argument("--split", type=str_list, default=None, help="pipeline split points, e.g. layers.2,layers.4")
    p.add_argument("--tp-plan", type=plan_entry, action="append", default=None, metavar="NAME=STYLE",
                   help="tensor-parallel plan entry for your own model, e.g. fc1=colwise or layers.*.mlp.up_proj=colwise; "
                        "auto: the model's own (transformers' base_model_tp_plan)")
    p.add_argument("--blocks", type=str_list, default=None, metavar="NAME,...",
                   help="your model's repeated blocks (fsdp units, checkpointed), e.g. model.layers (default: found)")
    p.add_argument("--sync-batchnorm", action="store_true",
                   help="ddp/fsdp on GPUs: BatchNorm statistics over the whole batch, not each rank's slice")
    p.add_argument("--hybrid", default="fsdp+tensor", help=f"hybrid layout: {Hybrid.allowed()}")
    p.add_argument("--mesh", default=None, help="hybrid mesh, outer x inner, e.g. 2x2")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup-steps", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=64, help="global batch size")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--profile-every", type=int, default=None,
                   help="record every Nth step after the warm-up for the time breakdown (0: none; "
                        "default: one window of the run's last 3 steps, ~1%% of a run's time)")
    p.add_argument("--trace", action="store_true",
                   help="write each rank's recorded steps as Chrome-trace JSON beside the run (Perfetto)")
    p.add_argument("--straggler", default=None, metavar="RANK:FACTOR",
                   help="a lesson's lever: that rank's forward and backward FACTOR times as slow, e.g. 1:2")
    p.add_argument("--no-stop-on-divergence", dest="stop_on_divergence", action="store_false",
                   help="keep training after the loss becomes NaN or infinite (it is reported either way)")
    p.add_argument("--bucket-mb", type=float, default=None, help="DDP gradient bucket size in MB (default 25)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile each block (the first, warm-up step compiles); not with pipelines")
    p.add_argument("--activation-checkpointing", default="none",
                   help="none, full or selective: recompute activations in backward instead of keeping them")
    p.add_argument("--zero", type=int, default=None, metavar="STAGE",
                   help="ZeRO stage: 1 (ddp: optimizer state sharded), 2 or 3 (fsdp: parameters kept or "
                        "freed between forward and backward)")
    p.add_argument("--memory-snapshot", action="store_true",
                   help="GPU: write a torch.cuda.memory snapshot beside the run (pytorch.org/memory_viz)")


def add_switch_options(p: argparse.ArgumentParser) -> None:
    """The run options a live switch may change: made from add_run_options for the names in
    config/switch.SWITCHABLE, so the two cannot drift. Each defaults to None: only the options
    given are switched."""
    runs = argparse.ArgumentParser(add_help=False)
    add_run_options(runs)
    for action in runs._actions:  # argparse's own list: copying keeps each option's type and help
        if action.dest in SWITCHABLE:
            switched = copy.copy(action)
            switched.default = None
            p._add_action(switched)


def switch_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The settings a ``switch`` was given (those left out stay as they are)."""
    change = {k: v for k, v in vars(args).items() if k in SWITCHABLE and v is not None}
    if "tp_plan" in change:
        change["tp_plan"] = tp_plan_setting(change["tp_plan"])
    return change


def switch_option(text: str) -> tuple[int, dict[str, str]]:
    """An argparse type: one ``--switch STEP:key=value[,key=value]``."""
    try:
        return parse_switch(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_continue_options(p: argparse.ArgumentParser) -> None:
    """How a run goes on: switches while it trains, its state saved, or resumed from a saved one."""
    p.add_argument("--switch", type=switch_option, action="append", default=None, metavar="STEP:KEY=VALUE,...",
                   help="before STEP, move every rank to these settings and go on training, e.g. "
                        "--switch 8:strategy=fsdp --switch 16:precision=bf16,workers=1 (repeatable)")
    p.add_argument("--save-state", action="store_true",
                   help="save the final state with DCP beside the run, to resume from")
    p.add_argument("--resume", default=None, metavar="RUN_ID",
                   help="go on from a saved run's state for --steps more steps (any layout or workers)")
    p.add_argument("--checkpoint-every", type=int, default=None, metavar="K", help="save the state every K steps")
    p.add_argument("--on-failure", default="fail", metavar="WHAT", help=f"when a rank's engine dies: "
                   f"{OnFailure.allowed()} (resume on a new engine; shrink to the workers left, same global batch)")
    p.add_argument("--max-failures", type=int, default=3, metavar="N", help="engine deaths a run goes on after")
    p.add_argument("--fault", default=None, metavar="kill:RANK@STEP",
                   help="kill that rank's engine (SIGKILL) at that step, to try --on-failure")


def continue_settings(args: argparse.Namespace) -> dict[str, Any]:
    """Session.run's switch, save_state and resume from parsed options."""
    switch = None
    if args.switch:
        switch = {}
        for step, change in args.switch:
            switch.setdefault(step, {}).update(change)
    return dict(switch=switch, save_state=args.save_state, resume=args.resume, checkpoint_every=args.checkpoint_every,
                on_failure=args.on_failure, max_failures=args.max_failures, fault=args.fault)


def run_settings(args: argparse.Namespace) -> dict[str, Any]:
    """RunConfig keyword arguments from parsed run options (workers left to the caller)."""
    return dict(
        model=args.model, model_options=dict(args.model_option), data=args.data, loss=args.loss,
        strategy=args.strategy,
        precision=args.precision, compression=args.compression, error_feedback=args.error_feedback,
        sync=args.sync, outer_lr=args.outer_lr, outer_momentum=args.outer_momentum,
        schedule=args.schedule, microbatches=args.microbatches, split=args.split,
        tp_plan=tp_plan_setting(args.tp_plan), blocks=_blocks(args.blocks), sync_batchnorm=args.sync_batchnorm, hybrid=args.hybrid, mesh=args.mesh,
        steps=args.steps, warmup_steps=args.warmup_steps, batch_size=args.batch_size, lr=args.lr,
        seed=args.seed, profile_every=args.profile_every, bucket_mb=args.bucket_mb, compile=args.compile,
        trace=args.trace, straggler=args.straggler, stop_on_divergence=args.stop_on_divergence,
        activation_checkpointing=args.activation_checkpointing, zero=args.zero,
        memory_snapshot=args.memory_snapshot,
    )


def _blocks(names: list[str] | None) -> str | tuple[str, ...] | None:
    return None if not names else names[0] if len(names) == 1 else tuple(names)


def non_negative(text: str) -> float:
    """An argparse type: a price or a carbon intensity, a number >= 0."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not is_number(value, low=0):
        raise argparse.ArgumentTypeError(f"expected a number >= 0, e.g. 2.5 (got {text!r})")
    return value


def add_price_options(p: argparse.ArgumentParser, energy: bool = True) -> None:
    """What runs are costed with (``parakit.Prices``); shared by run, sweep, demo and advise and
    their magics. Left out: the session's prices, else those of parakit/data/prices.json.
    ``energy=False`` for the advisor, which predicts no energy."""
    p.add_argument("--price-device-hour", type=non_negative, default=None, metavar="USD",
                   help="USD per hour of each device a run holds: a GPU, or on CPU engines a core "
                        "(default: the price table's for the device)")
    if energy:
        p.add_argument("--price-kwh", type=non_negative, default=None, metavar="USD",
                       help="USD per kWh of the measured energy (default: a world average)")
        p.add_argument("--carbon-intensity", type=non_negative, default=None, metavar="G_PER_KWH",
                       help="grams of CO2 per kWh of your grid (default: the world average, about 480)")


def price_settings(args: argparse.Namespace, base: Prices | None = None) -> Prices | None:
    """The price options as a Prices: ``base`` (a session's; default the table's) with what was
    given in place; None where no price option was given."""
    given = {"device_hour_usd": args.price_device_hour, "kwh_usd": getattr(args, "price_kwh", None),
             "grid_g_per_kwh": getattr(args, "carbon_intensity", None)}
    given = {k: v for k, v in given.items() if v is not None}
    return dataclasses.replace(base or Prices(), **given) if given else None


# What a sweep takes a comma list of (session/sweep.py runs their product, workers last).
SWEEP_LISTS = (
    ("model", str, ["mlp"], "mlp,gpt"), ("strategy", str, ["ddp"], "ddp,fsdp"),
    ("precision", str, ["fp32"], "fp32,bf16"), ("compression", str, ["none"], "none,powersgd:4"),
    ("workers", int, None, "1,2,4"),
)


def add_sweep_options(p: argparse.ArgumentParser) -> None:
    """A sweep's settings: a run's, with comma lists for SWEEP_LISTS (shared by ``parakit sweep``
    and ``%parakit sweep``). The parser needs ``conflict_handler="resolve"``: the lists replace
    the run options of the same names."""
    add_run_options(p)
    for name, kind, default, example in SWEEP_LISTS:
        p.add_argument(f"--{name}", type=comma_list(kind), default=default, metavar=example,
                       help="worker counts (default: every engine)" if name == "workers" else f"{name}s to try")
    p.add_argument("--repeats", type=int, default=1, metavar="N",
                   help="run every combination N times, alternating (A B A B); the 95 %% intervals then "
                        "come from the repeats' own spread (default 1)")


def sweep_settings(args: argparse.Namespace) -> dict[str, Any]:
    """``Session.sweep`` keyword arguments from parsed sweep options."""
    return {**run_settings(args), **{name: getattr(args, name) for name, *_ in SWEEP_LISTS}}


def add_bench_options(p: argparse.ArgumentParser) -> None:
    """The settings of a communication benchmark; shared with ``%parakit bench comm``."""
    p.add_argument("--workers", type=int, default=2, help="ranks taking part (at least 2)")
    p.add_argument("--sizes", type=str_list, default=None, metavar="SIZE,...",
                   help="message sizes, e.g. 1KB,64KB,1MB,16MB (default 1 KB .. 256 MB, powers of 4)")
    p.add_argument("--max-size", default=None, help="leave out larger sizes (default 64MB on CPU engines)")
    p.add_argument("--collectives", type=str_list, default=None,
                   help="all_reduce,all_gather,reduce_scatter,broadcast,send_recv (default: all)")
    p.add_argument("--repeats", type=int, default=10, help="timed calls per size (median reported)")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls per size first")
    p.add_argument("--dtype", default="float32", help="float32, float16 or bfloat16")


def bench_settings(args: argparse.Namespace) -> dict[str, Any]:
    return dict(workers=args.workers, sizes=args.sizes, collectives=args.collectives, repeats=args.repeats,
                warmup=args.warmup, max_size=args.max_size, dtype=args.dtype)


@contextlib.contextmanager
def checked_input():
    """Turn a setting's ValueError into a UsageError. Only the checking phase is wrapped, so a
    ValueError raised later, inside a run, is reported as the bug it is."""
    try:
        yield
    except ValueError as e:
        raise UsageError(str(e)) from None


def own_models(models: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    """``Panel(models=...)`` as run settings per name; one line naming a wrong entry."""
    out = {}
    for name, given in (models or {}).items():
        parts = given if isinstance(given, tuple) else (given,)
        if not isinstance(name, str) or name in {w.value for w in Workload} or not 1 <= len(parts) <= 3 \
                or not callable(parts[0]):
            raise ValueError(f"models[{name!r}] must be a model (a zero-argument callable) or a tuple "
                             "(model, data[, loss]), under a name that is not a built-in's")
        out[name] = {k: v for k, v in zip(("model", "data", "loss"), parts) if v is not None}
    return out

