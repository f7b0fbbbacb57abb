"""The ``parakit`` command: ``parakit run`` for one run, ``parakit sweep`` for many, ``parakit demo``
for the main job, ``parakit bench comm``, ``parakit advise``, ``parakit fit``, ``parakit runs``, and ``parakit preflight``
for a notebook's dry run on a faked machine.

Every setting is checked before an engine starts; a mistake is one line on stderr naming the
fix, with exit code 2 and no traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from parakit.records.store import delete_run, read_runs
from parakit.session.preflight import check_bench, check_continuation, check_run, check_runs, engines_here
from parakit.session.sweep import combinations, repeated
from parakit.frontends import names, options, text
from parakit.frontends.advisor_cli import add_advise_parser, advise_command
from parakit.frontends.demo import demo_command
from parakit.frontends.fit_cli import add_fit_parser, fit_command
from parakit.frontends.notebook_check import add_preflight_parser, preflight_command
from parakit.frontends.options import UsageError  # noqa: F401  (raised by the option parsers)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse prints usage + message; we want one line
        raise UsageError(f"{message} (see: {self.prog} --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="parakit", description="See what parallel training does.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser("run", help="one training run on local engines")
    options.add_run_options(run)
    options.add_continue_options(run)
    options.add_price_options(run)
    run.add_argument("--json", action="store_true", help="print the RunResult as JSON (only JSON on stdout)")
    options.add_engine_options(run)

    demo = sub.add_parser("demo", help="compare 1 and more workers; print a table, write an HTML report")
    demo.add_argument("--workers", type=options.int_list, default=None, help="worker counts to compare, e.g. 1,2,4")
    demo.add_argument("--steps", type=int, default=None, help="steps per run (default sized to the device)")
    demo.add_argument("--report", default=None, help="HTML report path (default RUNS_DIR/demo-report.html)")
    options.add_price_options(demo)
    options.add_engine_options(demo)

    sweep = sub.add_parser("sweep", conflict_handler="resolve",
                           help="every combination of comma lists of settings; a speed-up table")
    options.add_sweep_options(sweep)
    options.add_price_options(sweep)
    sweep.add_argument("--report", default=None, metavar="PATH.html", help="also write an HTML report there")
    options.add_engine_options(sweep)

    bench = sub.add_parser("bench", help="micro-benchmarks on local engines")
    kinds = bench.add_subparsers(dest="bench", required=True, parser_class=_Parser)
    comm = kinds.add_parser("comm", help="collectives over message sizes: time, algbw, busbw, alpha/beta fit")
    options.add_bench_options(comm)
    comm.add_argument("--json", action="store_true", help="print the result as JSON (only JSON on stdout)")
    options.add_engine_options(comm)

    add_advise_parser(sub)
    add_fit_parser(sub)
    add_preflight_parser(sub)

    runs = sub.add_parser("runs", help="the run store: list the runs, or delete some with what they saved")
    runs.add_argument("--delete", nargs="+", default=None, metavar="RUN_ID",
                      help="delete these runs: their records, traces, memory snapshots and saved state")
    runs.add_argument("--runs-dir", default=options.DEFAULT_RUNS_DIR, help="run store folder (default ./parakit-runs)")
    return parser


def bench_command(args: argparse.Namespace) -> int:
    from parakit.session.session import Session

    where, settings = options.engine_settings(args), options.bench_settings(args)
    with options.checked_input():
        world = check_bench(engines_here(**where), **settings)["workers"]
    with Session(world, **where) as session:
        bench = session.bench_comm(**settings)
    print(json.dumps(bench.to_dict(), indent=1) if args.json else text.bench_table(bench))
    return 0 if bench.ok else 1


def run_command(args: argparse.Namespace) -> int:
    from parakit.session.session import Session

    where = options.engine_settings(args)
    going_on = options.continue_settings(args)
    with options.checked_input():
        settings = names.resolve({**options.run_settings(args), "workers": args.workers})
        here = engines_here(**where)
        config = check_run(here, **settings)
        check_continuation(here, config, settings, runs_dir=where["runs_dir"], **going_on)  # before engines start
    settings["workers"] = config.workers
    with Session(config.workers, **where, prices=options.price_settings(args)) as session:
        result = session.run(**settings, **going_on)
    if args.json:
        print(json.dumps(result.to_dict(), indent=1))
    else:
        print(text.summary_line(result))
        if result.traces:
            print(text.how_to_open_traces(result))
    return 0 if result.ok else 1


def sweep_command(args: argparse.Namespace) -> int:
    from parakit.frontends.report import write_report
    from parakit.session.session import Session

    where, lists = options.engine_settings(args), options.sweep_settings(args)
    with options.checked_input():
        lists = names.resolve(lists)
        most = max(lists["workers"]) if lists["workers"] else None
        configs = check_runs(engines_here(workers=most, **where), combinations(**lists))
        repeated([], args.repeats)
    with Session(max(c.workers for c in configs), **where, prices=options.price_settings(args)) as session:
        results = session.sweep(on_run=text.sweep_progress, repeats=args.repeats, **lists)
    print()
    print(text.runs_table(results))
    if args.report:
        print(f"report: {write_report(results, args.report, title='parakit sweep').resolve()}")
    return 0 if all(r.ok for r in results) else 1


def runs_command(args: argparse.Namespace) -> int:
    """``parakit runs``: one line per run; ``--delete``: remove runs and all they saved."""
    if args.delete:
        with options.checked_input():
            for run_id in args.delete:  # every id checked before the first is removed
                if not (Path(args.runs_dir) / f"{run_id}.json").is_file():
                    raise ValueError(f"no run {run_id} in {args.runs_dir}")
        for run_id in args.delete:
            print(f"deleted {run_id}: {len(delete_run(run_id, args.runs_dir))} file(s) and folder(s)")
        return 0
    for run in read_runs(args.runs_dir):
        print(f"{run.run_id}  {text.summary_line(run)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        if args.command == "demo":
            return demo_command(args)
        if args.command == "sweep":
            return sweep_command(args)
        if args.command == "bench":
            return bench_command(args)
        if args.command == "advise":
            return advise_command(args)
        if args.command == "fit":
            return fit_command(args)
        if args.command == "preflight":
            return preflight_command(args)
        if args.command == "runs":
            return runs_command(args)
        return run_command(args)
    except options.UsageError as e:
        print(f"parakit: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("parakit: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
