"""``%parakit run | trace | sweep | panel`` and the ``%%parakit`` cell magic: training on the
engines, one run, a sweep of them, the panel, or a cell on every rank."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError
from IPython.core.magic_arguments import argument, kwds, magic_arguments
from IPython.display import display

from parakit.frontends import names, options, text
from parakit.frontends.magic_options import (checked, continue_options, engine_options, price_options, run_options,
                                             sweep_options, switch_options)
from parakit.frontends.magics_engines import EngineMagics
from parakit.frontends.magics_store import comparison_table
from parakit.frontends.terminal import for_this_frontend
from parakit.plots.runs import loss, speedup
from parakit.records.result import RunResult
from parakit.session.preflight import check_continuation, check_count, check_run
from parakit.session.sweep import combinations, repeated

if TYPE_CHECKING:
    from parakit.frontends.panel import Panel


class RankErrors(Exception):
    """A ``%%parakit`` cell failed on some ranks; each rank's traceback is shown under it."""

    def __init__(self, ranks: list[dict[str, Any]]):
        self.ranks = ranks
        names = ", ".join(str(r["rank"]) for r in ranks)
        super().__init__(f"the cell failed on rank {names}")

    def _render_traceback_(self) -> list[str]:  # IPython shows this instead of our own stack
        lines = []
        for r in self.ranks:
            error = r["error"]
            lines.append(f"[rank {r['rank']}] {getattr(error, 'ename', type(error).__name__)}: "
                         f"{getattr(error, 'evalue', error)}")
            if getattr(error, "traceback", None):
                lines.extend(error.traceback.splitlines())
        return lines


class RunMagics(EngineMagics):
    """Training on the engines."""

    @magic_arguments("parakit run")
    @run_options()
    @continue_options()
    @price_options()
    @engine_options()
    def _run(self, rest: str) -> RunResult:
        """Train once, with the same options as ``parakit run``; the result is saved to the
        run store and returned.

        In [1]: r = %parakit run --strategy ddp --workers 2 --model gpt --steps 20
        In [2]: r = %parakit run --model gpt --price-device-hour 2.5 --carbon-intensity 50
        In [3]: r = %parakit run --model gpt --steps 24 --switch 8:strategy=fsdp --switch 16:precision=bf16
        In [4]: r = %parakit run --model gpt --save-state
        In [5]: r = %parakit run --model gpt --strategy fsdp --resume 20261202-101139-1b3e7e --steps 10
        """
        args = self._parse(self._run, rest)
        going_on = options.continue_settings(args)
        with checked:  # your own model, data and loss, by their names in this notebook
            settings = names.resolve({**options.run_settings(args), "workers": args.workers}, self._namespace())
            here = self._preflight(args)
            check_continuation(here, check_run(here, **settings), settings, runs_dir=self._store(), **going_on)
        session = self._idle(self._session(args, [settings]))
        result = session.run(**settings, **going_on, prices=options.price_settings(args, session.prices))
        if not result.ok or result.summary.get("diverged_at_step") is not None:
            print(f"[parakit] {text.summary_line(result)}", file=sys.stderr)
        return result

    @magic_arguments("parakit switch")
    @switch_options()
    def _switch(self, rest: str) -> int:
        """Switch the settings of the run going on (a panel's, in the background): every rank
        agrees on a step, saves the state there and trains on with the new settings. Returns
        that step. (For a switch at a chosen step, use ``%parakit run --switch STEP:key=value``.)

        In [1]: %parakit switch --precision bf16
        In [2]: %parakit switch --strategy fsdp --workers 2
        """
        args = self._parse(self._switch, rest)
        change = options.switch_settings(args)
        if not change:
            raise UsageError("say what to switch, e.g. %parakit switch --precision bf16")
        if self.session is None or not self.session.busy:
            raise UsageError("no run is going to switch; start one from a panel, or use %parakit run --switch STEP:...")
        try:
            with checked:
                step = self.session.switch(**change)
        except RuntimeError as e:  # the run ended first, or another switch is on its way
            raise UsageError(str(e)) from None
        print(f"[parakit] switched to {', '.join(f'{k}={v}' for k, v in change.items())} at step {step}")
        return step

    @magic_arguments("parakit trace")
    @argument("--runs", type=options.comma_list(str), default=None, metavar="ID,...",
              help="these runs (default: the latest run with traces)")
    def _trace(self, rest: str) -> list[str]:
        """Where a traced run's Chrome-trace files are, and how to open them; returns the paths.

        In [1]: %parakit run --model gpt --trace
        In [2]: %parakit trace
        """
        args = self._parse(self._trace, rest)
        args.last = None
        runs = [r for r in self._select(args) if r.traces]
        if not runs:
            raise UsageError("no run with traces yet; make one with %parakit run --trace")
        print(text.how_to_open_traces(runs[-1]))
        return runs[-1].traces

    @magic_arguments("parakit sweep")
    @kwds(conflict_handler="resolve")
    @sweep_options()
    @price_options()
    @engine_options()
    def _sweep(self, rest: str) -> list[RunResult]:
        """Run every combination of the comma lists (``Session.sweep``), then show a comparison
        table and the speed-up and loss plots. Every combination is checked before the first
        one runs. Returns the runs.

        In [1]: %parakit sweep --workers 1,2 --strategy ddp --precision fp32,bf16 --compression none,powersgd:4
        In [2]: %parakit sweep --workers 1,2 --repeats 3   # each alternated 3 times: narrower intervals
        """
        args = self._parse(self._sweep, rest)
        with checked:
            lists = names.resolve(options.sweep_settings(args), self._namespace())
            repeated([], args.repeats)  # checked before any engine starts
        session = self._idle(self._session(args, combinations(**lists)))

        with checked:
            results = session.sweep(on_run=text.sweep_progress if session.progress else None,
                                    prices=options.price_settings(args, session.prices), repeats=args.repeats,
                                    **lists)
        if results and results[-1].status == "stopped":
            print(f"[parakit] sweep stopped after {len(results)} runs")
        display(comparison_table(results))
        try:
            display(for_this_frontend(speedup(results), "speedup", self._store()))
        except ValueError as e:
            print(f"[parakit] no speed-up plot: {e}")
        display(for_this_frontend(loss(results), "loss", self._store()))
        return results

    @magic_arguments("parakit panel")
    @argument("--model", type=options.comma_list(str), default=None, metavar="NAME,...",
              help="your own models, by their names in this notebook, beside the built-ins")
    @argument("--data", default=None, metavar="NAME", help="their data, by name (default: the model's own)")
    @argument("--loss", default=None, metavar="NAME", help="their loss, by name (default: cross-entropy)")
    def _panel(self, rest: str) -> Panel:
        """The control panel: pick a strategy, precision, compression and workers, press Run,
        and watch loss and speed-up fill in while it runs.

        In [1]: %parakit panel
        In [2]: %parakit panel --model Tiny --data batches
        """
        from parakit.frontends.panel import Panel  # ipywidgets and plotly's widgets, only when asked for

        args = self._parse(self._panel, rest)
        with checked:
            models = self._own_models(args.model or [], args.data, args.loss)
        panel = Panel(self._session(), models=models)
        self.panels.append(panel)
        return panel

    def _own_models(self, models: list[str], data: str | None, loss: str | None) -> dict[str, tuple]:
        """The panel's own models by name: (model, data, loss) looked up in the notebook."""
        if (data or loss) and not models:
            raise ValueError("--data and --loss go with --model NAME (your own model)")
        own = {}
        for name in models:
            found = names.resolve({"model": name, "data": data, "loss": loss}, self._namespace())
            if isinstance(found["model"], str):
                raise ValueError(f"{name} is a built-in model; the panel shows it already")
            own[name] = (found["model"], found["data"], found["loss"])
        return own

    @magic_arguments("%parakit")
    @argument("-n", "--workers", type=int, default=None, metavar="N",
              help="ranks to run the cell on (default: every engine)")
    @argument("--model", default=None, metavar="NAME", help="your model, by its name here: `model` on every rank")
    @argument("--data", default=None, metavar="NAME", help="your data, by its name here: `data` on every rank")
    @argument("--loss", default=None, metavar="NAME", help="your loss, by its name here: `loss` on every rank")
    def _cell_options(self, rest: str) -> None:
        """Run the cell on every engine with the process group formed and rank, world_size
        and device defined; output grouped by rank. Your own model, data and loss, named as
        in ``%parakit run``, are defined there as ``model``, ``data`` and ``loss``.

        In [1]: %%parakit -n 2 --model Tiny
           ...: print(rank, world_size, device, sum(p.numel() for p in model().parameters()))
        """

    def _cell(self, line: str, cell: str) -> None:
        if line.strip() in ("-h", "--help"):
            print(self._cell_options.parser.format_help())
            return
        args = self._parse(self._cell_options, line)
        if args.workers is not None and args.workers < 1:
            raise UsageError(f"-n must be >= 1 (got {args.workers})")
        with checked:  # before default engines would start
            given = {k: getattr(args, k) for k in ("model", "data", "loss") if getattr(args, k) is not None}
            defined = names.resolve(given, self._namespace())
            if args.workers is not None:
                check_count(self._preflight(), args.workers)
        session = self._idle(self._session())
        with checked:  # execute checks the count against this machine before any engine
            ranks = session.execute(cell, args.workers, names=defined)
        for r in ranks:
            if r["stdout"] or r["stderr"] or r["result"] is not None:
                print(f"[rank {r['rank']}]")
                sys.stdout.write(r["stdout"])
                if r["stderr"]:
                    sys.stdout.flush()
                    sys.stderr.write(r["stderr"])
                    sys.stderr.flush()
                if r["result"] is not None:
                    print(f"Out[rank {r['rank']}]: {r['result']}")
        failed = [r for r in ranks if r["error"] is not None]
        if failed:
            raise RankErrors(failed)

