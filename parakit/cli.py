"""The ``parakit`` command: ``parakit run`` for one run, ``parakit demo`` for the main job.

Every setting is checked before an engine starts; a mistake is one line on stderr naming the
fix, with exit code 2 and no traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from typing import Any

from parakit.cluster import placement
from parakit.config import Hybrid, Precision, RunConfig, Schedule, Strategy
from parakit.hosts import EngineLaunch, Launcher
from parakit.levers import check_cpu_precision, default_workers
from parakit.records import headline
from parakit.store import DEFAULT_RUNS_DIR


class UsageError(Exception):
    """A mistake in the command line: printed as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse prints usage + message; we want one line
        raise UsageError(f"{message} (see: {self.prog} --help)")


def _int_list(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _model_option(text: str) -> tuple[str, int]:
    key, sep, value = text.partition("=")
    try:
        return key.strip(), int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected KEY=INT, e.g. width=256, got {text!r}") from None


def _add_engine_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto (GPU when present), cpu or cuda")
    p.add_argument("--gpus", type=_int_list, help="GPU indices to pin engines to, e.g. 0,2")
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
    """The launch options as Session takes them, checked before any engine starts."""
    from parakit.cluster import netns

    launch = EngineLaunch(args.launcher, args.profile, args.cluster_id, args.ifname, args.link)
    reason = netns.why_not(launch.link) if launch.link is not None else None
    if reason:
        raise ValueError(f"--link {args.link} cannot be made here: {reason}")
    return {"engines": launch.engines.value, "profile": launch.profile, "cluster_id": launch.cluster_id,
            "ifname": launch.ifname, "link": launch.link and launch.link.text}


def engine_checks(args: argparse.Namespace, workers: int | None):
    """(launch settings, GPUs of this machine the engines will use, this machine's facts).
    Engines of other launchers are on other hosts: this machine's GPUs and size say nothing."""
    launch = launch_settings(args)
    facts = placement.host_facts()
    if launch["engines"] != "local":
        return launch, [], facts
    gpus = placement.choose_gpus(args.device, args.gpus, facts)
    if workers is not None and workers >= 1:
        placement.check_workers(workers, facts)  # first: a clearer message than the batch's
    return launch, gpus, facts


def _str_list(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def _plan_entry(text: str) -> tuple[str, str]:
    name, sep, style = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected NAME=colwise|rowwise, got {text!r}")
    return name.strip(), style.strip()


def add_run_options(p: argparse.ArgumentParser) -> None:
    """The settings of one run; shared by ``parakit run`` and the ``%parakit run`` magic."""
    p.add_argument("--workers", type=int, default=None, help="ranks (default: 1 for single, else 2 or one per GPU)")
    p.add_argument("--strategy", default="ddp", help=f"{Strategy.allowed()}")
    p.add_argument("--model", default="mlp", help="mlp, cnn or gpt")
    p.add_argument("--model-option", type=_model_option, action="append", default=[],
                   metavar="KEY=INT", help="size of the built-in model, e.g. --model-option width=256")
    p.add_argument("--precision", default="fp32", help=f"{Precision.allowed()}")
    p.add_argument("--compression", default="none", help="none, fp16, bf16, powersgd:R, topk:K, randomk:K")
    p.add_argument("--no-error-feedback", dest="error_feedback", action="store_false",
                   help="topk/randomk: drop what compression leaves out instead of carrying it over")
    p.add_argument("--sync", default="every-step", help="every-step, local-sgd:H or accumulate:K")
    p.add_argument("--schedule", default="gpipe", help=f"pipeline schedule: {Schedule.allowed()}")
    p.add_argument("--microbatches", type=int, default=None, help="pipeline micro-batches per step")
    p.add_argument("--split", type=_str_list, default=None, help="pipeline split points, e.g. layers.2,layers.4")
    p.add_argument("--tp-plan", type=_plan_entry, action="append", default=None, metavar="NAME=STYLE",
                   help="tensor-parallel plan entry for your own model, e.g. fc1=colwise")
    p.add_argument("--hybrid", default="fsdp+tensor", help=f"hybrid layout: {Hybrid.allowed()}")
    p.add_argument("--mesh", default=None, help="hybrid mesh, outer x inner, e.g. 2x2")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup-steps", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=64, help="global batch size")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--profile-every", type=int, default=None,
                   help="record every Nth step after the warm-up for the time breakdown (0: none; "
                        "default: one window of 3 steps right after the warm-up, ~1%% of a run's time)")
    p.add_argument("--trace", action="store_true",
                   help="write each rank's recorded steps as Chrome-trace JSON beside the run (Perfetto)")
    p.add_argument("--no-stop-on-divergence", dest="stop_on_divergence", action="store_false",
                   help="keep training after the loss becomes NaN or infinite (it is reported either way)")
    p.add_argument("--bucket-mb", type=float, default=None, help="DDP gradient bucket size in MB (default 25)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile each block (the first, warm-up step compiles); not with pipelines")


def run_settings(args: argparse.Namespace) -> dict[str, Any]:
    """RunConfig keyword arguments from parsed run options (workers left to the caller)."""
    return dict(
        model=args.model, model_options=dict(args.model_option), strategy=args.strategy,
        precision=args.precision, compression=args.compression, error_feedback=args.error_feedback,
        sync=args.sync, schedule=args.schedule, microbatches=args.microbatches, split=args.split,
        tp_plan=dict(args.tp_plan) if args.tp_plan else None, hybrid=args.hybrid, mesh=args.mesh,
        steps=args.steps, warmup_steps=args.warmup_steps, batch_size=args.batch_size, lr=args.lr,
        seed=args.seed, profile_every=args.profile_every, bucket_mb=args.bucket_mb, compile=args.compile,
        trace=args.trace, stop_on_divergence=args.stop_on_divergence,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="parakit", description="See what parallel training does.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser("run", help="one training run on local engines")
    add_run_options(run)
    run.add_argument("--json", action="store_true", help="print the RunResult as JSON (only JSON on stdout)")
    _add_engine_options(run)

    demo = sub.add_parser("demo", help="compare 1 and more workers; print a table, write an HTML report")
    demo.add_argument("--workers", type=_int_list, default=None, help="worker counts to compare, e.g. 1,2,4")
    demo.add_argument("--steps", type=int, default=None, help="steps per run (default sized to the device)")
    demo.add_argument("--report", default=None, help="HTML report path (default RUNS_DIR/demo-report.html)")
    _add_engine_options(demo)

    bench = sub.add_parser("bench", help="micro-benchmarks on local engines")
    kinds = bench.add_subparsers(dest="bench", required=True, parser_class=_Parser)
    comm = kinds.add_parser("comm", help="collectives over message sizes: time, algbw, busbw, alpha/beta fit")
    add_bench_options(comm)
    comm.add_argument("--json", action="store_true", help="print the result as JSON (only JSON on stdout)")
    _add_engine_options(comm)

    from parakit.advisor_cli import add_advise_parser  # here: advisor_cli reads this module's helpers

    add_advise_parser(sub)
    return parser


def add_bench_options(p: argparse.ArgumentParser) -> None:
    """The settings of a communication benchmark; shared with ``%parakit bench comm``."""
    p.add_argument("--workers", type=int, default=2, help="ranks taking part (at least 2)")
    p.add_argument("--sizes", type=_str_list, default=None, metavar="SIZE,...",
                   help="message sizes, e.g. 1KB,64KB,1MB,16MB (default 1 KB .. 256 MB, powers of 4)")
    p.add_argument("--max-size", default=None, help="leave out larger sizes (default 64MB on CPU engines)")
    p.add_argument("--collectives", type=_str_list, default=None,
                   help="all_reduce,all_gather,reduce_scatter,broadcast,send_recv (default: all)")
    p.add_argument("--repeats", type=int, default=10, help="timed calls per size (median reported)")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls per size first")
    p.add_argument("--dtype", default="float32", help="float32, float16 or bfloat16")


def bench_settings(args: argparse.Namespace) -> dict[str, Any]:
    return dict(workers=args.workers, sizes=args.sizes, collectives=args.collectives, repeats=args.repeats,
                warmup=args.warmup, max_size=args.max_size, dtype=args.dtype)


def bench_table(bench: Any) -> str:
    """The benchmark as text: a line per (collective, size), then the fits."""
    from parakit.progress import size_text

    if not bench.ok:
        return f"{bench.bench_id} {bench.status}: {bench.error}"
    lines = [f"{bench.bench_id}: {bench.backend} x{bench.world_size} on {bench.device[0]}, {bench.dtype}",
             f"{'collective':<15}{'size':>10}{'time (us)':>12}{'algbw GB/s':>12}{'busbw GB/s':>12}"]
    for r in bench.rows:
        lines.append(f"{r['collective']:<15}{size_text(r['bytes']):>10}{r['time_s'] * 1e6:>12.1f}"
                     f"{r['algbw_gbps']:>12.3f}{r['busbw_gbps']:>12.3f}")
    for name, fit in bench.fits.items():
        lines.append(f"fit {name}: " + (f"latency {fit['alpha_s'] * 1e6:.1f} us, bandwidth "
                                        f"{fit['beta_bytes_per_s'] / 1e9:.3f} GB/s"
                                        if fit.get("alpha_s") is not None else f"none ({fit['reason']})"))
    lines += [f"skipped {name}: {why}" for name, why in bench.skipped.items()]
    return "\n".join(lines)


def bench_command(args: argparse.Namespace) -> int:
    from parakit.bench import bench_settings as check_bench
    from parakit.session import Session, check_runs_dir

    settings = bench_settings(args)
    with checked_input():
        launch, gpus, facts = engine_checks(args, None)
        check_bench(settings["workers"], settings["sizes"], settings["collectives"], settings["repeats"],
                    settings["warmup"], settings["max_size"], settings["dtype"], gpus)
        if launch["engines"] == "local":
            placement.check_workers(settings["workers"], facts)
        check_runs_dir(args.runs_dir)
    with Session(settings["workers"], device=args.device, gpus=args.gpus, runs_dir=args.runs_dir, **launch) as session:
        bench = session.bench_comm(**settings)
    print(json.dumps(bench.to_dict(), indent=1) if args.json else bench_table(bench))
    return 0 if bench.ok else 1


@contextlib.contextmanager
def checked_input():
    """Turn a setting's ValueError into a UsageError. Only the checking phase is wrapped, so a
    ValueError raised later, inside a run, is reported as the bug it is."""
    try:
        yield
    except ValueError as e:
        raise UsageError(str(e)) from None


def run_command(args: argparse.Namespace) -> int:
    from parakit.session import Session, check_runs_dir

    with checked_input():
        launch, gpus, _ = engine_checks(args, args.workers)
        strategy = Strategy.parse(args.strategy, "strategy")
        workers = args.workers if args.workers is not None else default_workers(strategy, args.mesh, max(len(gpus), 2))
        if args.workers is None:
            engine_checks(args, workers)
        settings = run_settings(args)
        config = RunConfig(workers=workers, **settings)
        check_runs_dir(args.runs_dir)
        if not gpus:
            check_cpu_precision(config.precision)
        placement.check_gpu_sharing(config, gpus)
    with Session(workers, device=args.device, gpus=args.gpus, runs_dir=args.runs_dir, **launch) as session:
        result = session.run(workers=workers, **settings)
    if args.json:
        print(json.dumps(result.to_dict(), indent=1))
    else:
        print(summary_line(result))
        if result.traces:
            print(how_to_open_traces(result))
    return 0 if result.ok else 1


def summary_line(result: Any) -> str:
    """The run's id and headline (records.headline), as the CLI and the magics print it."""
    return f"{result.run_id} {headline(result)}"


def how_to_open_traces(result: Any) -> str:
    """The trace files of a run (``trace=True``), and the ways to open them."""
    folder = os.path.dirname(result.traces[0])
    return "\n".join([
        f"{len(result.traces)} Chrome-trace file(s) of run {result.run_id}, one per rank and profiler window:",
        *(f"  {path}" for path in result.traces),
        "Open one in https://ui.perfetto.dev (Open trace file) or chrome://tracing (Load);",
        "or all ranks at once with Holistic Trace Analysis (pip install HolisticTraceAnalysis):",
        f"  from hta.trace_analysis import TraceAnalysis; TraceAnalysis(trace_dir={folder!r}).get_temporal_breakdown()",
    ])


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        if args.command == "demo":
            from parakit.demo import demo_command

            return demo_command(args)
        if args.command == "bench":
            return bench_command(args)
        if args.command == "advise":
            from parakit.advisor_cli import advise_command

            return advise_command(args)
        return run_command(args)
    except UsageError as e:
        print(f"parakit: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("parakit: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
