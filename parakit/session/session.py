"""The facade users hold: start engines, run, sweep, stop, restart, close. The CLI, magics and
panel all use it; the benchmark, cell execution and status are in tools.py."""

from __future__ import annotations

import contextlib
import os
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

from parakit.cluster import launchers
from parakit.cluster.engines import EngineSet
from parakit.cluster.placement import EngineInfo
from parakit.config.hosts import Launcher
from parakit.config.prices import Prices, check_prices
from parakit.config.run import Device, RunConfig
from parakit.records.result import RunResult
from parakit.records.store import DEFAULT_RUNS_DIR, read_runs, runs_frame
from parakit.session.preflight import EngineFacts, check_run, engines_here
from parakit.session.fit import FitResult, run_fit
from parakit.session.progress import StatusLine
from parakit.session.repair import after_run, restart_engines
from parakit.session.sweep import combinations, run_sweep, said_in_a_terminal
from parakit.session.switching import LiveSwitch, run_segments
from parakit.session.tools import SessionTools


class Session(SessionTools):
    """Local ipyparallel engines pinned to devices, reused by every run.

    Example:
        >>> with parakit.Session(workers=2) as s:
        ...     r = s.run(model="gpt", strategy="ddp", steps=20)
        ...     print(r.summary["samples_per_s"])

    Args:
        workers: engines to start now (default: one per visible GPU, else 2). Runs that ask for
            more add engines; runs that ask for fewer use the first ones.
        device: "auto" (a GPU per engine when there is one), "cpu" or "cuda".
        gpus: physical GPU indices to pin engines to, round robin (default: all visible).
        runs_dir: the run store folder; every run is saved there as JSON.
        progress: print progress of each run (a line that updates in place).
        auto_restart: when an engine dies during a run, replace every engine right after it
            (the run is saved as failed with the steps made); False leaves that to
            ``restart()`` and refuses runs until then.
        hang_timeout_s: a run whose progress has not moved for this long is a hang: it is
            stopped, the error says which ranks did not arrive, and the engines are replaced.
            (The process group's own timeout, 300 s, is the backstop.)
        engines: how engines start: "local" (processes on this machine), "mpi", "slurm" or
            "ssh" (ipyparallel's launchers, configured by ``profile``), or "attach" (to an
            ipcluster already running: ``profile`` and ``cluster_id`` say which). See
            docs/multi-host.md for the Slurm and MPI recipes.
        profile: ipyparallel profile name or folder (not for "local").
        cluster_id: the cluster to attach to, or the id to give a new one.
        ifname: the network interface between hosts (e.g. "eth0", "ib0"): the process group's
            address is rank 0's on it, and gloo and NCCL use it.
        link: "RATE,DELAY", e.g. "1gbit,1ms": run local engines on two hosts made of network
            namespaces joined by a link of that rate and delay (every other engine on the
            second host), so communication costs what it would on such a network. Needs root
            and iproute2; refused with the reason otherwise.
        prices: what a device-hour, a kWh and its CO2 cost, to cost each run with (default:
            the price table shipped with parakit; records/run_cost.py has the rule).
    """

    def __init__(
        self,
        workers: int | None = None,
        *,
        device: str = "auto",
        gpus: list[int] | None = None,
        runs_dir: str | os.PathLike = DEFAULT_RUNS_DIR,
        progress: bool = True,
        auto_restart: bool = True,
        hang_timeout_s: float = 120.0,
        engines: str = "local",
        profile: str | None = None,
        cluster_id: str | None = None,
        ifname: str | None = None,
        link: str | None = None,
        prices: Prices | None = None,
    ):
        if not isinstance(auto_restart, bool):
            raise ValueError(f"auto_restart must be True or False (got {auto_restart!r})")
        if isinstance(hang_timeout_s, bool) or not isinstance(hang_timeout_s, (int, float)) or not hang_timeout_s > 0:
            raise ValueError(f"hang_timeout_s must be a positive number of seconds (got {hang_timeout_s!r})")
        self.hang_timeout_s = float(hang_timeout_s)
        self.prices = check_prices(prices)
        wanted = engines_here(workers=workers, device=device, gpus=gpus, runs_dir=runs_dir, engines=engines,
                              profile=profile, cluster_id=cluster_id, ifname=ifname, link=link)
        workers, local = wanted.workers, wanted.local
        self.device = Device.parse(device, "device")
        self.launch, self.facts, self.gpus = wanted.launch, wanted.facts, wanted.gpus
        self.runs_dir = runs_dir
        self.progress = progress
        self._warned: set[str] = set()
        self.auto_restart = auto_restart
        self._broken: str | None = None  # why runs are refused until restart(), if they are
        self._stop = threading.Event()  # set by stop(), from another thread, to end a run
        self._state_lock = threading.Lock()
        self._running = False
        self._live: LiveSwitch | None = None  # the run going on, while it can switch
        self._gpu_indices = gpus
        self._engines = self._new_engines()
        started = time.monotonic()
        line = StatusLine() if progress else None  # one line, rewritten when the engines are up
        if line:
            line.show(f"starting {workers} engine(s) on {self._device_text()}{self._where_text()} ...", force=True)
        self._warn_once(launchers.running_as_root_note(self.launch))
        try:
            self._engines.start(workers)
        except BaseException:
            self._engines.close()
            if line:
                line.end(None)
            raise
        if not local:
            self.gpus = self._engines.pinned_gpus()
        if line:
            line.end(f"{self.workers} engine(s) ready on {len(self._engines.hosts())} host(s) "
                     f"in {time.monotonic() - started:.1f} s")

    # -- engines -----------------------------------------------------------------------
    @property
    def workers(self) -> int:
        return self._engines.size

    @property
    def engines(self) -> list[EngineInfo]:
        """One ``cluster.placement.EngineInfo`` per engine, in start order: engine id, pid, host, device, threads."""
        return list(self._engines.engines)

    @property
    def hosts(self) -> list[str]:
        """The hosts the engines are on, in rank order."""
        return self._engines.hosts()

    def close(self) -> None:
        """Stop every engine; nothing (process, port, file, namespace) is left behind. An
        attached cluster keeps running: its owner stops it."""
        self._engines.close()

    def _new_engines(self) -> EngineSet:
        return EngineSet(self.gpus, launch=self.launch, device=self.device.value, gpu_indices=self._gpu_indices)

    def _where_text(self) -> str:
        launch = self.launch
        if launch.link is not None:
            return f", on two hosts joined by a {launch.link.text} link"
        return "" if launch.launcher is Launcher.LOCAL else f" through {launch.launcher.value}"

    def network(self) -> dict[str, Any]:
        """Where runs go: the launcher, hosts, interface and link (recorded with each run)."""
        return {**self.launch.describe(), "hosts": self.hosts}

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Session({self.workers} engines on {self._device_text()}, runs in {self.runs_dir!s})"

    def _device_text(self) -> str:
        return f"{len(self.gpus)} GPU(s)" if self.gpus else "CPU"

    # -- runs --------------------------------------------------------------------------
    def config(self, **settings: Any) -> RunConfig:
        """Check run settings and fill in defaults, without touching an engine."""
        return check_run(self.preflight(), **settings)

    def preflight(self) -> EngineFacts:
        """What a request is checked against on this session (see session/preflight.py)."""
        return EngineFacts(self.facts, self.gpus, self.workers, self.launch)

    def run(
        self,
        model: Any = "mlp",
        *,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
        prices: Prices | None = None,
        switch: dict[int, dict[str, Any]] | None = None,
        save_state: bool = False,
        resume: str | None = None,
        checkpoint_every: int | None = None, on_failure: str = "fail", max_failures: int = 3, fault: str | None = None,
        **settings: Any,
    ) -> RunResult:
        """Train once on the engines and save the result to the run store.

        Example:
            >>> r = s.run(model="gpt", steps=24, switch={8: {"strategy": "fsdp"}, 16: {"precision": "bf16"}})
            >>> parakit.load_runs(s.runs_dir, segments=True)

        Args:
            model: "mlp", "cnn", "gpt" or a zero-argument callable returning an nn.Module.
            **settings: any RunConfig field: strategy, workers, precision, compression,
                error_feedback, sync, schedule, microbatches, split, tp_plan, hybrid, mesh, steps,
                batch_size, data, loss, model_options, lr, seed, warmup_steps, profile_every,
                stop_on_divergence, trace (Chrome traces of the recorded steps, in
                ``RunResult.traces``), compile, live.
            on_progress: called (in the calling thread, a few times a second) with rank 0's
                progress, a dict with step, steps and loss (None where reading it would sync a
                GPU), instead of the printed progress line.
            prices: the prices to cost this run with, instead of the session's.
            switch: {step: {setting: value}}: before that step every rank moves to the new
                settings (strategy, workers, precision, compression, sync, the layout's own)
                and training goes on with the same parameters, optimizer state, data position
                and RNG. The result has one ``segments`` entry per stretch of steps.
            save_state: save the final state with DCP beside the run file, to resume from.
            resume: a run id saved with save_state=True: go on from its state for ``steps``
                more steps, under the same or another layout or worker count.
            checkpoint_every, on_failure, max_failures, fault: survive a lost worker: a checkpoint every K steps;
                on a death, "resume" or "shrink", N times at most; "kill:RANK@STEP" tries it (docs/reliability.md).

        Returns:
            The RunResult (also saved as JSON in ``runs_dir``). A failed or interrupted run is
            returned and saved too, with its status and error; the engines stay usable.

        Raises:
            ValueError: If the settings do not fit together (no engine is touched then).
            RuntimeError: If another run or cell is going on this session (from another thread).
        """
        config = self.config(model=model, **settings)
        prices = self.prices if prices is None else check_prices(prices)
        with self._one_at_a_time():
            result = run_segments(self, config, {"model": model, **settings}, switch=switch, save_state=save_state,
                                  resume=resume, on_progress=on_progress, prices=prices, fault=fault,
                                  checkpoint_every=checkpoint_every, on_failure=on_failure, max_failures=max_failures)
        for warning in result.warnings:  # a busy machine, a run still settling ...: one line each, on stderr
            warnings.warn(f"parakit: {result.run_id}: {warning}", stacklevel=2)
        return result

    def switch(self, **settings: Any) -> int:
        """Switch settings of the run going on, from another thread (a panel's toggle): every
        rank agrees on a step, saves the state there and goes on with the new settings.

        Example:
            >>> threading.Thread(target=s.run, kwargs=dict(model="gpt", steps=200)).start()
            >>> s.switch(precision="bf16")   # -> the step it took effect at, e.g. 37

        Returns:
            The global step from which the run trains with the new settings.

        Raises:
            ValueError: when the settings do not fit (checked as a fresh run's, first).
            RuntimeError: when no run that can switch is going, or it ended first.
        """
        waited = time.monotonic()
        while self._live is None and self._running and time.monotonic() - waited < 10.0:
            time.sleep(0.05)  # a run just started is checking its settings: its switch comes next
        live = self._live
        if live is None:
            raise RuntimeError("no run that can switch is going on this session (start one with run())")
        return live.ask(settings)

    def sweep(
        self,
        workers: int | list[int] | None = None,
        *,
        on_run: Callable[[int, int, str, RunResult | None], None] | None = None,
        prices: Prices | None = None,
        repeats: int = 1,
        **settings: Any,
    ) -> list[RunResult]:
        """Run every combination of lists of settings, one after another, each saved like a run.

        Example:
            >>> runs = s.sweep(workers=[1, 2], strategy="ddp", precision=["fp32", "bf16"], model="gpt")
            >>> parakit.load_runs(s.runs_dir)[["strategy", "workers", "precision", "speedup"]]

        Args:
            workers: a worker count or a list of them (default: every engine).
            on_run: called before each run with (i, n, label, None) and after it with
                (i, n, label, result) instead of a printed line per run.
            prices: the prices to cost these runs with, instead of the session's.
            repeats: run every combination this many times, alternating (A B A B, not A A B B);
                the intervals then come from the repeats' own spread (records/intervals.py).
            **settings: any RunConfig field; for model, batch_size, strategy, precision,
                compression and sync a list means each of them (``sweep.SWEEPABLE``).

        Returns:
            The RunResults in run order (workers vary fastest); a stopped run ends the sweep.

        Raises:
            ValueError: before the first run, if any combination does not fit (no engine is
                touched then).
        """
        said = said_in_a_terminal if self.progress else None
        return run_sweep(self, combinations(workers, **settings), on_run or said, prices, repeats)

    def fit(self, model: Any = "gpt", vary: str = "depth", memory_limit: int | str = "1GB",
            strategies: Any = ("ddp", "fsdp"), workers: int | None = None, *, start: int | None = None,
            high: int | None = None, **settings: Any) -> FitResult:
        """For each strategy, the largest ``vary`` (depth, width or batch_size) whose measured
        memory per rank stays under ``memory_limit``: short real runs, doubling then bisecting.

        Example:
            >>> s.fit("gpt", vary="depth", memory_limit="64MB", strategies=["ddp", {"strategy": "ddp", "zero": 1}, "fsdp"])

        Args:
            model: a built-in model (vary depth or width), or your own (vary batch_size).
            memory_limit: bytes per rank, e.g. "8GB". On a GPU it is enforced (a run over it
                fails with an out-of-memory); on a CPU the measured tensors are compared with it.
            strategies: layouts to try: names, or dicts of settings such as {"strategy": "fsdp", "zero": 2}.
            workers: ranks per run (default: every engine; strategy single runs on one).
            start, high: the first value tried, and the largest worth trying.
            **settings: any other run setting (batch_size, precision, activation_checkpointing ...).

        Returns:
            A FitResult: ``.table()``, ``.figure()``, and every try with its measured and
            predicted memory (each try is also a run in the store).

        Raises:
            ValueError: before any run, when the request or a layout does not fit together.
        """
        return run_fit(self, model, vary, memory_limit, strategies, workers, start, high, settings)

    def runs(self):
        """The run store as a pandas DataFrame."""
        return runs_frame(read_runs(self.runs_dir))

    def stop(self) -> bool:
        """Stop the run going on this session, from another thread (a panel's Stop button).

        Every rank is interrupted within a few seconds, by a signal to its pid (ipyparallel's
        nanny is not needed); the run is saved as ``stopped`` and the engines stay usable. Safe
        to call from any thread, and when nothing runs.

        Returns:
            True if a run (or cell) was going and has been asked to stop.
        """
        with self._state_lock:
            if self._running:
                self._stop.set()
            return self._running

    @property
    def busy(self) -> bool:
        """True while a run or a cell is going on these engines (in any thread)."""
        return self._running

    def _after(self, outcome) -> str | None:
        """After a failure or stop: repair the engines as needed (session/repair.py)."""
        return after_run(self, outcome)

    def restart(self) -> None:
        """Replace every engine with a fresh one (same count and devices) and drop the process
        group; what a dead or stuck engine needs. Runs in the store are not touched."""
        with self._one_at_a_time(repairing=True):
            self._restart_engines()
            self._broken = None

    @contextlib.contextmanager
    def _one_at_a_time(self, repairing: bool = False) -> Iterator[None]:
        """One run or cell at a time: the engines (and the client) are shared by every thread."""
        if self._broken and not repairing:
            raise RuntimeError(self._broken)
        with self._state_lock:
            if self._running:
                raise RuntimeError("a run is already going on this session (a panel's?); wait for it to end, "
                                   "or stop it with session.stop()")
            self._running = True
            self._stop.clear()
        try:
            yield
        finally:
            with self._state_lock:
                self._running = False

    # -- helpers -----------------------------------------------------------------------
    def _restart_engines(self) -> None:
        restart_engines(self)

    def _warn_once(self, message: str | None) -> None:
        if message and message not in self._warned:
            self._warned.add(message)
            warnings.warn(f"parakit: {message}", stacklevel=3)
