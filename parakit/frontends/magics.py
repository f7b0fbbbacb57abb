"""``%load_ext parakit``: the ``%parakit`` line magic and the ``%%parakit`` cell magic.

Thin, as ipyparallel's ``client/magics.py``: each subcommand parses its options with
``magic_arguments`` and hands the work to the Session, the plot functions or the run store, so
the CLI, the panel and the magics share it. A mistake in the input is an IPython UsageError of
one line that names the fix, raised before any engine is started or touched.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class
from IPython.core.magic_arguments import ArgDecorator, argument, kwds, magic_arguments, parse_argstring
from IPython.display import display

from parakit.frontends import options, text
from parakit.advisor.advice import advise, check_request
from parakit.plots.advisor import projection, verification
from parakit.plots.measures import comm_bandwidth
from parakit.plots.runs import PLOTS, loss, speedup, speedup_table
from parakit.records.result import STOPPED, RunResult
from parakit.session.preflight import Engines, check_bench, check_count, check_runs, engines_here
from parakit.session.session import Session
from parakit.records.store import DEFAULT_RUNS_DIR, read_runs, runs_frame
from parakit.frontends.terminal import for_this_frontend

if TYPE_CHECKING:
    from parakit.frontends.panel import Panel

# What engines start with when nothing says otherwise (Session's own defaults).
DEFAULT_ENGINES: dict[str, Any] = {"engines": None, "device": "auto", "gpus": None, "runs_dir": None,
                                   "launch": None}

# -- option groups, shared as decorators ---------------------------------------------------
def _comma_list(kind: type) -> Callable[[str], list]:
    def parse(text: str) -> list:
        try:
            return [kind(x.strip()) for x in text.split(",") if x.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected a comma-separated list of {kind.__name__}, e.g. 1,2 (got {text!r})"
            ) from None

    return parse


class run_options(ArgDecorator):
    """The settings of one run, exactly as ``parakit run`` takes them."""

    def add_to_parser(self, parser, group):
        options.add_run_options(parser)


class engine_options(ArgDecorator):
    """Where engines run; used when they start (``start``, ``restart``, a first ``run``)."""

    def add_to_parser(self, parser, group):
        parser.add_argument("--gpus", type=_comma_list(int), default=None, metavar="0,1",
                            help="GPU indices to pin engines to (default: every visible GPU)")
        parser.add_argument("--cpu", action="store_true", help="CPU engines, even with GPUs present")
        options.add_launch_options(parser)


class advise_options(ArgDecorator):
    """The advisor's settings, exactly as ``parakit advise`` takes them."""

    def add_to_parser(self, parser, group):
        options.add_advise_options(parser)


class bench_options(ArgDecorator):
    """The settings of a communication benchmark, exactly as ``parakit bench comm`` takes them."""

    def add_to_parser(self, parser, group):
        options.add_bench_options(parser)


class selection_options(ArgDecorator):
    """Which runs of the store: the last K, or named ones."""

    def add_to_parser(self, parser, group):
        which = parser.add_mutually_exclusive_group()
        which.add_argument("--last", type=int, default=None, metavar="K", help="the K latest runs")
        which.add_argument("--runs", type=_comma_list(str), default=None, metavar="ID,...",
                           help="these runs (the end of an id is enough when it is unique)")


class _ChecksInput:
    """Turns a setting's ValueError into a UsageError; only around checks, so a ValueError
    from inside a run is reported as the bug it is."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, error, tb) -> None:
        if isinstance(error, ValueError):
            raise UsageError(str(error)) from None


checked = _ChecksInput()

# The lists ``sweep`` takes, in the order its product runs (workers innermost, so each
# configuration's speed-up curve fills in one go).
SWEEP_LISTS = ("model", "strategy", "precision", "compression", "workers")


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


@magics_class
class ParakitMagics(Magics):
    """The ``%parakit`` magics; one session (set of engines) per IPython shell."""

    def __init__(self, shell=None):
        super().__init__(shell)
        self.session: Session | None = None
        self.panels: list[Panel] = []
        self._engine_settings: dict[str, Any] = {}
        self._runs_dir = DEFAULT_RUNS_DIR
        self._subcommands: dict[str, Callable[[str], Any]] = {
            "start": self._start, "status": self._status, "stop": self._stop,
            "restart": self._restart, "run": self._run, "sweep": self._sweep,
            "panel": self._panel, "plot": self._plot, "runs": self._runs, "bench": self._bench,
            "advise": self._advise, "trace": self._trace,
        }

    @line_cell_magic
    def parakit(self, line: str, cell: str | None = None):
        """Parallel training on local engines, from a notebook.

        ``%parakit SUBCOMMAND [options]``; ``%parakit SUBCOMMAND -h`` lists its options. With
        no engines yet, a subcommand that needs them starts them with the defaults (one per
        GPU, else 2 on CPU) and says so; ``%parakit`` alone does that and shows them.

        Subcommands::

            In [1]: %parakit start -n 2 --cpu        # engines (or --gpus 0,1)
            In [2]: %parakit status                  # engines, devices, pids, memory
            In [3]: %parakit run --strategy ddp --workers 2 --model gpt --steps 20
            In [4]: %parakit sweep --workers 1,2 --strategy ddp --precision fp32,bf16
            In [5]: %parakit panel                   # the control panel
            In [6]: %parakit plot speedup --last 4   # KINDS
            In [7]: %parakit runs --last 10          # the run store as a DataFrame
            In [8]: %parakit bench comm --sizes 1KB,1MB,16MB   # collectives: time, busbw
            In [9]: %parakit advise --model gpt --workers 2 --verify   # predict, rank, measure
            In [10]: %parakit restart -n 4           # new engines (these stop)
            In [11]: %parakit stop                   # stop every engine

        As a cell magic (``%%parakit [-n N]``), runs the cell on every engine (or the first
        N) with the process group formed and ``rank``, ``world_size`` and ``device``
        defined; output is grouped by rank::

            In [10]: %%parakit
                ...: import torch, torch.distributed as dist
                ...: t = torch.ones(1, device=device) * (rank + 1)
                ...: dist.all_reduce(t)
                ...: print(t.item())
        """
        if cell is not None:
            return self._cell(line, cell)
        name, _, rest = line.strip().partition(" ")
        if not name:
            return self._status("", start=True)
        if name not in self._subcommands:
            raise UsageError(f"unknown subcommand {name!r}; use one of: {', '.join(self._subcommands)}")
        handler = self._subcommands[name]
        if rest.strip() in ("-h", "--help"):
            print(handler.parser.format_help())
            return None
        return handler(rest)

    # -- engines -------------------------------------------------------------------------
    @magic_arguments("parakit start")
    @argument("-n", dest="engines", type=int, default=None, metavar="N",
              help="engines to start (default: one per GPU, else 2)")
    @engine_options()
    @argument("--runs-dir", default=None, help=f"run store folder (default ./{DEFAULT_RUNS_DIR})")
    def _start(self, rest: str) -> None:
        """Start engines pinned to devices; runs reuse them, and add more when they need them.
        ``--engines mpi|slurm|ssh`` starts them through ipyparallel's launchers, ``--engines
        attach --cluster-id ID`` attaches to a running ipcluster, ``--link 1gbit,1ms`` puts
        local engines on two hosts joined by a slow link (docs/multi-host.md).

        In [1]: %parakit start -n 2 --cpu
        In [2]: %parakit start -n 2 --link 200mbit,1ms
        """
        args = self._parse(self._start, rest)
        wanted = self._engine_request(args)
        if self.session is not None:
            if not self._matches(wanted):
                raise UsageError(f"engines are already running ({self._describe()}); to change them: "
                                 f"%parakit restart {rest.strip()}")
            print(f"[parakit] engines already running: {self._describe()}")
            return
        self._start_session(**wanted)

    @magic_arguments("parakit restart")
    @argument("-n", dest="engines", type=int, default=None, metavar="N",
              help="engines to start (default: as many as now)")
    @engine_options()
    @argument("--runs-dir", default=None, help="run store folder (default: as now)")
    def _restart(self, rest: str) -> None:
        """Stop the engines and start new ones: the same as before, or as the options say.
        Use it when an engine is stuck, or to change their number or devices.

        In [1]: %parakit restart -n 4
        """
        args = self._parse(self._restart, rest)
        self._engine_request(args)  # checks the options go together
        wanted = {**DEFAULT_ENGINES, **self._engine_settings}  # as now, unless the options say
        if self.session is not None:
            wanted["engines"] = self.session.workers
        if args.engines is not None:
            wanted["engines"] = args.engines
        if args.cpu:
            wanted.update(device="cpu", gpus=None)
        if args.gpus is not None:
            wanted.update(device="auto", gpus=args.gpus)
        if _launch_given(args):
            wanted["launch"] = self._engine_request(args)["launch"]
        if args.runs_dir is not None:
            wanted["runs_dir"] = args.runs_dir
        # Checked first, so bad options leave the running engines alone.
        self._check_engines(wanted)
        self._stop("")
        self._start_session(**wanted)

    @magic_arguments("parakit stop")
    def _stop(self, rest: str) -> None:
        """Stop every engine; nothing (process, port, file) is left behind. Open panels close.

        In [1]: %parakit stop
        """
        self._parse(self._stop, rest)
        if self.session is None:
            print("[parakit] no engines are running")
            return
        for panel in self.panels:
            panel.close()
        closed = f"; closed {len(self.panels)} panel(s)" if self.panels else ""
        self.panels = []
        n = self.session.workers
        self._runs_dir = self.session.runs_dir
        self.session.close()
        self.session = None
        print(f"[parakit] stopped {n} engine(s){closed}")

    @magic_arguments("parakit status")
    def _status(self, rest: str, start: bool = False):
        """The engines: rank, engine id, pid, device, threads, process group, memory (MiB).

        In [1]: %parakit status
        """
        self._parse(self._status, rest)
        if self.session is None and not start:
            print("[parakit] no engines are running; start them with %parakit start")
            return None
        import pandas as pd

        frame = pd.DataFrame(self._session().status())
        for column in ("rss_bytes", "peak_rss_bytes"):
            frame[column.replace("_bytes", "_mib")] = pd.to_numeric(frame.pop(column)) / 2**20
        return frame

    # -- runs ----------------------------------------------------------------------------
    @magic_arguments("parakit run")
    @run_options()
    @engine_options()
    def _run(self, rest: str) -> RunResult:
        """Train once, with the same options as ``parakit run``; the result is saved to the
        run store and returned.

        In [1]: r = %parakit run --strategy ddp --workers 2 --model gpt --steps 20
        """
        args = self._parse(self._run, rest)
        settings = {**options.run_settings(args), "workers": args.workers}
        session = self._idle(self._session(args, [settings]))
        result = session.run(**settings)
        if not result.ok or result.summary.get("diverged_at_step") is not None:
            print(f"[parakit] {text.summary_line(result)}", file=sys.stderr)
        return result

    @magic_arguments("parakit trace")
    @argument("--runs", type=_comma_list(str), default=None, metavar="ID,...",
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
    @run_options()
    @argument("--workers", type=_comma_list(int), default=None, metavar="1,2,4",
              help="worker counts (default: every engine)")
    @argument("--strategy", type=_comma_list(str), default=["ddp"], metavar="ddp,fsdp")
    @argument("--model", type=_comma_list(str), default=["mlp"], metavar="mlp,gpt")
    @argument("--precision", type=_comma_list(str), default=["fp32"], metavar="fp32,bf16")
    @argument("--compression", type=_comma_list(str), default=["none"], metavar="none,powersgd:4")
    @engine_options()
    def _sweep(self, rest: str) -> None:
        """Run every combination of the comma lists, then show a comparison table and the
        speed-up and loss plots. Every combination is checked before the first one runs.

        In [1]: %parakit sweep --workers 1,2 --strategy ddp --precision fp32,bf16 --compression none,powersgd:4
        """
        args = self._parse(self._sweep, rest)
        base = options.run_settings(args)
        lists = {key: getattr(args, key) or [None] for key in SWEEP_LISTS}
        combos = [{**base, **dict(zip(SWEEP_LISTS, values))}
                  for values in itertools.product(*lists.values())]
        session = self._idle(self._session(args, combos))
        results = []
        for i, settings in enumerate(combos, start=1):
            print(f"[parakit] sweep {i}/{len(combos)}: {_label(settings)} ...", flush=True)
            result = session.run(**settings)
            results.append(result)
            print(f"[parakit]   {text.summary_line(result)}", flush=True)
            if result.status == STOPPED:
                print(f"[parakit] sweep stopped after {i} of {len(combos)} runs")
                break
        display(comparison_table(results))
        try:
            display(for_this_frontend(speedup(results), "speedup", self._store()))
        except ValueError as e:
            print(f"[parakit] no speed-up plot: {e}")
        display(for_this_frontend(loss(results), "loss", self._store()))

    @magic_arguments("parakit panel")
    def _panel(self, rest: str) -> Panel:
        """The control panel: pick a strategy, precision, compression and workers, press Run,
        and watch loss and speed-up fill in while it runs.

        In [1]: %parakit panel
        """
        from parakit.frontends.panel import Panel  # ipywidgets and plotly's widgets, only when asked for

        self._parse(self._panel, rest)
        panel = Panel(self._session())
        self.panels.append(panel)
        return panel

    # -- the run store -------------------------------------------------------------------
    @magic_arguments("parakit plot")
    @argument("kind", help=f"the figure: {', '.join(PLOTS)}")
    @selection_options()
    def _plot(self, rest: str):
        """Draw stored runs (default: every run in the store).

        In [1]: %parakit plot speedup --last 4
        In [2]: %parakit plot loss --runs 20250101-120000-1a2b3c,4d5e6f
        """
        args = self._parse(self._plot, rest)
        kind = args.kind.replace("-", "_")
        if kind not in PLOTS:
            raise UsageError(f"no plot {args.kind!r}; available: {', '.join(PLOTS)}")
        results = self._select(args)
        with checked:
            return for_this_frontend(PLOTS[kind](results), kind, self._store())

    @magic_arguments("parakit runs")
    @argument("--last", type=int, default=None, metavar="K", help="the K latest runs only")
    def _runs(self, rest: str):
        """The run store as a pandas DataFrame, one row per run, oldest first.

        In [1]: df = %parakit runs --last 10
        """
        args = self._parse(self._runs, rest)
        return runs_frame(self._select(args, empty_ok=True))

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
        settings = options.advise_settings(args)
        with checked:  # every input, before any engine starts
            settings["calibration"] = options.checked_calibration(settings["calibration"])
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

    # -- the cell magic ------------------------------------------------------------------
    @magic_arguments("%parakit")
    @argument("-n", "--workers", type=int, default=None, metavar="N",
              help="ranks to run the cell on (default: every engine)")
    def _cell_options(self, rest: str) -> None:
        """Run the cell on every engine with the process group formed and rank, world_size
        and device defined; output grouped by rank.

        In [1]: %%parakit -n 2
           ...: print(rank, world_size, device)
        """

    def _cell(self, line: str, cell: str) -> None:
        if line.strip() in ("-h", "--help"):
            print(self._cell_options.parser.format_help())
            return
        args = self._parse(self._cell_options, line)
        if args.workers is not None and args.workers < 1:
            raise UsageError(f"-n must be >= 1 (got {args.workers})")
        if args.workers is not None:
            with checked:  # before default engines would start
                check_count(self._preflight(), args.workers)
        session = self._idle(self._session())
        with checked:  # execute checks the count against this machine before any engine
            ranks = session.execute(cell, args.workers)
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

    # -- helpers -------------------------------------------------------------------------
    def _parse(self, handler, rest: str) -> argparse.Namespace:
        try:
            return parse_argstring(handler, rest)
        except UsageError as e:
            raise UsageError(f"{e} (see: %{handler.parser.prog} -h)") from None

    @staticmethod
    def _engine_request(args: argparse.Namespace) -> dict[str, Any]:
        if args.cpu and args.gpus is not None:
            raise UsageError("--cpu and --gpus do not go together; drop one of them")
        launch = options.launch_settings(args) if _launch_given(args) else None
        return {
            "engines": getattr(args, "engines", None),
            "device": "cpu" if args.cpu else "auto",
            "gpus": args.gpus,
            "runs_dir": getattr(args, "runs_dir", None),
            "launch": launch,
        }

    def _check_engines(self, wanted: dict[str, Any]) -> None:
        n = wanted.get("engines")
        if n is not None and (n < 1):
            raise UsageError(f"-n must be >= 1 (got {n})")
        with checked:
            engines_here(workers=n, device=wanted["device"], gpus=wanted["gpus"], runs_dir=wanted.get("runs_dir"),
                         **(wanted.get("launch") or {}))

    def _start_session(self, engines=None, device="auto", gpus=None, runs_dir=None, launch=None,
                       note="") -> Session:
        wanted = {"engines": engines, "device": device, "gpus": gpus, "runs_dir": runs_dir, "launch": launch}
        self._check_engines(wanted)
        runs_dir = runs_dir or self._runs_dir
        if note:
            print(f"[parakit] {note}", flush=True)
        with checked:
            self.session = Session(engines, device=device, gpus=gpus, runs_dir=runs_dir, **(launch or {}))
        self._engine_settings = {**wanted, "runs_dir": runs_dir}
        self._runs_dir = runs_dir
        print(f"[parakit] {self._describe()} ready")
        return self.session

    def _session(self, args: argparse.Namespace | None = None, runs: list[dict] = ()) -> Session:
        """The running session, after checking ``runs`` against it; or, with none yet, check
        them against this machine and start one with the defaults (or the engine options)."""
        wanted = self._engine_request(args) if args is not None else dict(DEFAULT_ENGINES)
        if self.session is None:
            with checked:
                check_runs(engines_here(device=wanted["device"], gpus=wanted["gpus"]), list(runs), _label)
            return self._start_session(device=wanted["device"], gpus=wanted["gpus"],
                                       note="no engines yet: starting them with the defaults "
                                            "(choose with %parakit start -n N --cpu | --gpus 0,1)")
        if not self._matches(wanted):
            fix = "--cpu" if wanted["device"] == "cpu" else f"--gpus {','.join(map(str, wanted['gpus']))}"
            raise UsageError(f"the engines run on {self._describe()}; to change that: %parakit restart {fix}")
        with checked:
            check_runs(self.session.preflight(), list(runs), _label)
        return self.session

    def _preflight(self, args: argparse.Namespace | None = None) -> Engines:
        """What a request is checked against: the running engines, or those that would start."""
        if self.session is not None:
            return self.session.preflight()
        wanted = self._engine_request(args) if args is not None else dict(DEFAULT_ENGINES)
        return engines_here(device=wanted["device"], gpus=wanted["gpus"], **(wanted["launch"] or {}))

    def _idle(self, session: Session) -> Session:
        """The engines run one thing at a time; a panel's run may be going in the background."""
        if session.busy:
            raise UsageError("a run is going on these engines (a panel's?); wait for it to end, or press Stop")
        return session

    def _matches(self, wanted: dict[str, Any]) -> bool:
        """Whether the running engines are what the engine options ask for (unset: anything)."""
        s = self.session
        return (
            wanted.get("engines") in (None, s.workers)
            and not (wanted["device"] == "cpu" and s.gpus)
            and wanted["gpus"] in (None, [g.index for g in s.gpus])
            and wanted.get("runs_dir") in (None, s.runs_dir)
            and wanted.get("launch") in (None, self._engine_settings.get("launch"))
        )

    def _store(self):
        return self.session.runs_dir if self.session else self._runs_dir

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

    def _describe(self) -> str:
        s = self.session
        where = f"GPUs {[g.index for g in s.gpus]}" if s.gpus else "CPU"
        return f"{s.workers} engine(s) on {where}, runs in {s.runs_dir}"


def _launch_given(args: argparse.Namespace) -> bool:
    return any(getattr(args, name, None) not in (None, "local")
               for name in ("launcher", "profile", "cluster_id", "ifname", "link"))


def _find_run(runs: list[RunResult], wanted: str, runs_dir) -> RunResult:
    exact = [r for r in runs if r.run_id == wanted]
    matches = exact or [r for r in runs if r.run_id.endswith(wanted)]
    if len(matches) != 1:
        what = "no run" if not matches else f"{len(matches)} runs match"
        raise UsageError(f"{what} {wanted!r} in {runs_dir}; see the ids with %parakit runs")
    return matches[0]


def _label(settings: dict[str, Any]) -> str:
    parts = [f"{key}={settings[key]}" for key in SWEEP_LISTS if settings.get(key) is not None]
    return " ".join(parts)


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
    measured = speedup_table(results).drop(columns=["model", "strategy", "workers"])
    return frame.merge(measured, on="run_id", how="left")


def load_ipython_extension(ipython) -> None:
    """Register the magics; ``%load_ext parakit`` calls this."""
    ipython.register_magics(ParakitMagics)


def unload_ipython_extension(ipython) -> None:
    """``%unload_ext parakit``: stop the engines and close the panels, then drop the magics."""
    magics = ipython.magics_manager.registry.get("ParakitMagics")
    if magics is not None and magics.session is not None:
        magics._stop("")
    for table in ipython.magics_manager.magics.values():
        table.pop("parakit", None)
    ipython.magics_manager.registry.pop("ParakitMagics", None)


# The plot kinds in the docs come from PLOTS, so a new kind is documented where it is added.
ParakitMagics.parakit.__doc__ = ParakitMagics.parakit.__doc__.replace("KINDS", ", ".join(PLOTS))
