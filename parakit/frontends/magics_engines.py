"""``%parakit start | restart | stop | status``, and what every subcommand needs of the engines:
the running session, or one started with the defaults after the request is checked."""

from __future__ import annotations

import argparse
from dataclasses import asdict, fields
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from parakit.frontends import options
from parakit.frontends.magic_options import checked, engine_options
from parakit.records.engine_facts import EngineStatus
from parakit.records.store import DEFAULT_RUNS_DIR
from parakit.session.preflight import EngineFacts, check_runs, engines_here
from parakit.session.session import Session

# What engines start with when nothing says otherwise (Session's own defaults).
DEFAULT_START: dict[str, Any] = {"engines": None, "device": "auto", "gpus": None, "runs_dir": None,
                                   "launch": None}


class EngineMagics(Magics):
    """The engines of one IPython shell: one session, started on demand."""

    session: Session | None
    panels: list
    _engine_settings: dict[str, Any]
    _runs_dir: Any

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
        wanted = {**DEFAULT_START, **self._engine_settings}  # as now, unless the options say
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
        open_panels = [p for p in self.panels if not p.closed]  # a panel closed by hand is not counted
        for panel in open_panels:
            panel.close()
        closed = f"; closed {len(open_panels)} panel(s)" if open_panels else ""
        self.panels = []
        n = self.session.workers
        self._runs_dir = self.session.runs_dir
        self.session.close()
        self.session = None
        print(f"[parakit] stopped {n} engine(s){closed}")

    @magic_arguments("parakit status")
    def _status(self, rest: str, start: bool = False):
        """The engines: rank, engine id, pid, device, threads, process group, memory (MiB, or why not).

        In [1]: %parakit status
        """
        self._parse(self._status, rest)
        if self.session is None and not start:
            print("[parakit] no engines are running; start them with %parakit start")
            return None
        import pandas as pd

        # A table is what a notebook shows; the columns are EngineStatus's, even with no engines.
        frame = pd.DataFrame([asdict(row) for row in self._session().status()],
                             columns=[f.name for f in fields(EngineStatus)])
        for column in ("rss_bytes", "peak_rss_bytes"):
            frame[column.replace("_bytes", "_mib")] = pd.to_numeric(frame.pop(column)) / 2**20
        return frame

    # -- helpers -------------------------------------------------------------------------
    def _namespace(self) -> dict[str, Any] | None:
        """The notebook's names, where your own model, data and loss are looked up."""
        return self.shell.user_ns if self.shell else None

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
        wanted = self._engine_request(args) if args is not None else dict(DEFAULT_START)
        if self.session is None:
            with checked:
                check_runs(self._preflight(args), list(runs))
            return self._start_session(device=wanted["device"], gpus=wanted["gpus"],
                                       note="no engines yet: starting them with the defaults "
                                            "(choose with %parakit start -n N --cpu | --gpus 0,1)")
        if not self._matches(wanted):
            fix = "--cpu" if wanted["device"] == "cpu" else f"--gpus {','.join(map(str, wanted['gpus']))}"
            raise UsageError(f"the engines run on {self._describe()}; to change that: %parakit restart {fix}")
        with checked:
            check_runs(self.session.preflight(), list(runs))
        return self.session

    def _preflight(self, args: argparse.Namespace | None = None) -> EngineFacts:
        """What a request is checked against: the running engines, or those that would start."""
        if self.session is not None:
            return self.session.preflight()
        wanted = self._engine_request(args) if args is not None else dict(DEFAULT_START)
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

    def _describe(self) -> str:
        s = self.session
        where = f"GPUs {[g.index for g in s.gpus]}" if s.gpus else "CPU"
        return f"{s.workers} engine(s) on {where}, runs in {s.runs_dir}"


def _launch_given(args: argparse.Namespace) -> bool:
    return any(getattr(args, name, None) not in (None, "local")
               for name in ("launcher", "profile", "cluster_id", "ifname", "link"))
