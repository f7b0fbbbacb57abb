"""``%parakit plot | runs | bench | advise``: the run store drawn and listed, the communication
benchmark, and the advisor."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from IPython.core.error import UsageError
from IPython.core.magic_arguments import argument, magic_arguments
from IPython.display import display

from parakit.advisor.advice import advise, check_request
from parakit.frontends import advise_options as advise_group
from parakit.frontends import names, options, text
from parakit.frontends.magic_options import (
    advise_options, bench_options, checked, engine_options, fit_options, selection_options,
)
from parakit.frontends.magics_engines import EngineMagics
from parakit.frontends.fit_cli import fit_settings, fit_text
from parakit.frontends.terminal import for_this_frontend
from parakit.config.fit import check_fit
from parakit.plots.fit import fit_figure
from parakit.plots.advisor import projection, verification
from parakit.plots.measures import comm_bandwidth
from parakit.plots.runs import PLOTS, speedup_table
from parakit.records.result import RunResult
from parakit.records.segments import segment_frame
from parakit.records.store import delete_run, read_runs, runs_frame
from parakit.session.preflight import check_bench


class StoreMagics(EngineMagics):
    """What is in the run store, and the measurements beside training."""

    @magic_arguments("parakit plot")
    @argument("kind", help=f"the figure: {', '.join(PLOTS)}")
    @argument("run", nargs="?", default=None, help="one run's id (or its end): the same as --runs RUN")
    @selection_options()
    def _plot(self, rest: str):
        """Draw stored runs (default: every run in the store; timeline: the latest run).

        In [1]: %parakit plot speedup --last 4
        In [2]: %parakit plot loss --runs 20250101-120000-1a2b3c,4d5e6f
        In [3]: %parakit plot timeline 1a2b3c
        """
        args = self._parse(self._plot, rest)
        if args.run is not None:
            args.runs = [args.run]
        kind = args.kind.replace("-", "_")
        if kind not in PLOTS:
            raise UsageError(f"no plot {args.kind!r}; available: {', '.join(PLOTS)}")
        results = self._select(args)
        with checked:
            return for_this_frontend(PLOTS[kind](results), kind, self._store())

    @magic_arguments("parakit runs")
    @argument("--last", type=int, default=None, metavar="K", help="the K latest runs only")
    @argument("--segments", action="store_true", help="one row per segment of a switched run")
    @argument("--delete", nargs="+", default=None, metavar="RUN_ID",
              help="delete these runs with what they saved (traces, snapshots, state)")
    def _runs(self, rest: str):
        """The run store as a pandas DataFrame, one row per run, oldest first.

        In [1]: df = %parakit runs --last 10
        In [2]: %parakit runs --segments
        In [3]: %parakit runs --delete 20261202-101139-1b3e7e
        """
        args = self._parse(self._runs, rest)
        if args.delete:
            with checked:
                for run_id in args.delete:  # every id checked before the first is removed
                    if not (Path(self._store()) / f"{run_id}.json").is_file():
                        raise ValueError(f"no run {run_id} in {self._store()}")
            for run_id in args.delete:
                delete_run(run_id, self._store())
            print(f"[parakit] deleted {len(args.delete)} run(s) and what they saved")
            return None
        selected = self._select(args, empty_ok=True)
        return segment_frame(selected) if args.segments else runs_frame(selected)

    @magic_arguments("parakit bench")
    @argument("kind", choices=["comm"], help="comm: the communication micro-benchmark")
    @bench_options()
    @engine_options()
    def _bench(self, rest: str):
        """Time all_reduce, all_gather, reduce_scatter, broadcast and send/recv over message
        sizes on the engines; prints time, algorithm and bus bandwidth per size and a latency +
        bandwidth fit, saves the result in the run store and shows bus bandwidth by size.

        In [1]: %parakit bench comm --sizes 1KB,64KB,1MB,16MB --collectives all_reduce,send_recv
        """
        args = self._parse(self._bench, rest)
        settings = options.bench_settings(args)
        with checked:  # the settings, before any engine starts
            check_bench(self._preflight(args), **settings)
        session = self._idle(self._session(args))
        with checked:
            bench = session.bench_comm(**settings)
        print(text.bench_table(bench), file=sys.stdout if bench.ok else sys.stderr)
        return comm_bandwidth([bench]) if bench.ok else bench

    @magic_arguments("parakit advise")
    @advise_options()
    @engine_options()
    def _advise(self, rest: str):
        """Predict every configuration's step time, samples/s, memory per rank and bytes sent for
        a model on N workers and rank them; show the projected speed-up from 1 to N workers.
        It calibrates on the engines first (one-worker runs and the communication benchmark,
        saved in the run store); --verify then runs the top ones and compares.

        In [1]: advice = %parakit advise --model gpt --model-option depth=4 --workers 2 --verify
        In [2]: %parakit advise --model gpt --workers 64 --hardware h100-ib --project-to 1024
        """
        args = self._parse(self._advise, rest)
        settings = advise_group.advise_settings(args)
        with checked:
            settings = names.resolve(settings, self._namespace())
        with checked:  # every input, before any engine starts
            settings["calibration"] = advise_group.checked_calibration(settings["calibration"])
            check_request(**{k: v for k, v in settings.items() if k != "calibration"})
        # a saved calibration predicts without engines; calibrating and verifying need them
        session = None if settings["calibration"] and not args.verify else self._idle(self._session(args))
        with checked:
            advice = advise(**settings, session=session, runs_dir=session.runs_dir if session else self._runs_dir)
        print(text.advice_table(advice))
        if advice.projections:
            display(for_this_frontend(projection(advice), "projection", self._store()))
        if advice.verified:
            display(for_this_frontend(verification(advice), "verification", self._store()))
        return advice

    @magic_arguments("parakit fit")
    @fit_options()
    @engine_options()
    def _fit(self, rest: str):
        """The largest model per layout under a memory limit (``Session.fit``): short real
        runs, doubling then bisecting; prints the table, shows the figure, returns the FitResult.

        In [1]: fit = %parakit fit --model gpt --vary depth --memory-limit 64MB --strategies ddp,ddp:zero=1,fsdp
        """
        args = self._parse(self._fit, rest)
        with checked:  # every input, before any engine starts
            settings = names.resolve(fit_settings(args), self._namespace())
            model, vary, limit, strategies = (settings.pop(k) for k in ("model", "vary", "memory_limit", "strategies"))
            extra = {k: settings.pop(k) for k in ("workers", "start", "high")}
            workers = extra["workers"] or self._preflight(args).workers
            check_fit(model, vary, limit, strategies, workers, extra["start"], extra["high"], settings)
        session = self._idle(self._session(args))
        with checked:
            result = session.fit(model, vary, limit, strategies, workers, start=extra["start"], high=extra["high"], **settings)
        print(fit_text(result))
        display(for_this_frontend(fit_figure(result), "fit", self._store()))
        return result

    def _select(self, args: argparse.Namespace, empty_ok: bool = False) -> list[RunResult]:
        runs_dir = self._store()
        runs = read_runs(runs_dir)
        if not runs and not empty_ok:
            raise UsageError(f"no runs in {runs_dir} yet; make one with %parakit run")
        if args.last is not None:
            if args.last < 1:
                raise UsageError(f"--last must be >= 1 (got {args.last})")
            runs = runs[-args.last:]
        if getattr(args, "runs", None):
            runs = [_find_run(runs, wanted, runs_dir) for wanted in args.runs]
        return runs


def _find_run(runs: list[RunResult], wanted: str, runs_dir) -> RunResult:
    exact = [r for r in runs if r.run_id == wanted]
    matches = exact or [r for r in runs if r.run_id.endswith(wanted)]
    if len(matches) != 1:
        what = "no run" if not matches else f"{len(matches)} runs match"
        raise UsageError(f"{what} {wanted!r} in {runs_dir}; see the ids with %parakit runs")
    return matches[0]



def comparison_table(results: list[RunResult]):
    """One row per run of a sweep, in the order they ran: settings, status, samples/s,
    step time and speed-up (NaN where a run has no number, never 0)."""
    import pandas as pd

    frame = pd.DataFrame([
        {"run_id": r.run_id, "status": r.status, "model": r.config.get("model"),
         "strategy": r.config.get("strategy"), "workers": r.world_size,
         "precision": r.config.get("precision"), "compression": r.config.get("compression")}
        for r in results
    ])
    measured = speedup_table(results).drop(columns=["label", "model", "strategy", "workers"])
    return frame.merge(measured, on="run_id", how="left")
