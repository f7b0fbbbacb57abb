"""The facade users hold: start engines, run, close. The CLI, magics and panel all use it."""

from __future__ import annotations

import os
import time
import warnings
from typing import Any

from parakit.cluster import placement
from parakit.cluster.engines import EngineSet
from parakit.cluster.launch import launch
from parakit.config import Device, RunConfig, Strategy
from parakit.levers import check_cpu_precision, default_workers
from parakit.progress import ProgressPrinter, note
from parakit.records import OK, RankInfo, RunResult, new_run_id, now_iso, steps_from_ranks, summarize
from parakit.store import DEFAULT_RUNS_DIR, read_runs, runs_frame, save_run


def unmeasured_wire(config: RunConfig) -> str:
    if config.strategy is Strategy.SINGLE:
        return "a single worker sends nothing"
    return (f"bytes are counted in DDP's communication hooks; {config.strategy}'s collectives "
            "(all-gather, reduce-scatter, send/recv) are not counted yet")


class Session:
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
    """

    def __init__(
        self,
        workers: int | None = None,
        *,
        device: str = "auto",
        gpus: list[int] | None = None,
        runs_dir: str | os.PathLike = DEFAULT_RUNS_DIR,
        progress: bool = True,
    ):
        self.device = Device.parse(device, "device")
        self.facts = placement.host_facts()
        self.gpus = placement.choose_gpus(self.device, gpus, self.facts)
        workers = workers if workers is not None else (len(self.gpus) or 2)
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers must be an integer >= 1 (got {workers!r})")
        placement.check_workers(workers, self.facts)
        self.runs_dir = runs_dir
        self.progress = progress
        self._warned: set[str] = set()
        self._engines = EngineSet(self.gpus)
        started = time.monotonic()
        if progress:
            note(f"starting {workers} engine(s) on {self._device_text()} ...")
        try:
            self._engines.start(workers)
        except BaseException:
            self._engines.close()
            raise
        if progress:
            note(f"{workers} engine(s) ready in {time.monotonic() - started:.1f} s")

    # -- engines -----------------------------------------------------------------------
    @property
    def workers(self) -> int:
        return self._engines.size

    @property
    def engines(self) -> list[dict[str, Any]]:
        """One description per engine: engine id, pid, host, device, threads."""
        return [dict(e) for e in self._engines.engines]

    def close(self) -> None:
        """Stop every engine; nothing (process, port, file) is left behind."""
        self._engines.close()

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
        settings = {k: v for k, v in settings.items() if v is not None}
        strategy = Strategy.parse(settings.get("strategy", Strategy.DDP), "strategy")
        settings.setdefault("workers", default_workers(strategy, settings.get("mesh"), self.workers))
        workers = settings["workers"]
        if isinstance(workers, int) and not isinstance(workers, bool) and workers >= 1:
            placement.check_workers(workers, self.facts)  # first: clearer than the batch's message
        config = RunConfig(**settings)
        if not self.gpus:
            check_cpu_precision(config.precision)
        return config

    def run(self, model: Any = "mlp", **settings: Any) -> RunResult:
        """Train once on the engines and save the result to the run store.

        Args:
            model: "mlp", "cnn", "gpt" or a zero-argument callable returning an nn.Module.
            **settings: any RunConfig field: strategy, workers, precision, compression,
                error_feedback, sync, schedule, microbatches, split, tp_plan, hybrid, mesh, steps,
                batch_size, data, loss, model_options, lr, seed, warmup_steps.

        Returns:
            The RunResult (also saved as JSON in ``runs_dir``). A failed or interrupted run is
            returned and saved too, with its status and error; the engines stay usable.
        """
        config = self.config(model=model, **settings)
        self._engines.grow(config.workers)
        backend, warning = None, None
        if config.strategy is not Strategy.SINGLE:
            backend, warning = self._engines.ensure_group(config.workers)
            self._warn_once(warning)
        started = now_iso()
        printer = ProgressPrinter(config) if self.progress else None
        outcome = launch(self._engines, config, printer)
        if printer:
            printer.done(outcome.status)
        result = self._result(config, backend, outcome, started)
        if warning:
            result.warnings.append(warning)
        save_run(result, self.runs_dir)
        if outcome.status != OK:
            # A rank that failed mid-collective leaves the group unusable: form it afresh.
            self._engines.group = None
            if outcome.engines_unusable:
                self._restart_engines()
        return result

    def runs(self):
        """The run store as a pandas DataFrame."""
        return runs_frame(read_runs(self.runs_dir))

    # -- helpers -----------------------------------------------------------------------
    def _result(self, config: RunConfig, backend, outcome, started: str) -> RunResult:
        ranks = []
        for rank, engine in enumerate(self._engines.engines[: config.workers]):
            measured = outcome.rank_results[rank] if outcome.rank_results else {}
            ranks.append(RankInfo(
                rank=rank, engine_id=engine["engine_id"], pid=engine["pid"], host=engine["host"],
                device=engine["device"], device_name=engine["device_name"],
                gpu_index=engine["gpu_index"], threads=engine["threads"],
                peak_mem_bytes=measured.get("peak_mem_bytes"), peak_mem_kind=measured.get("peak_mem_kind"),
                params_digest=measured.get("params_digest"),
                param_bytes=measured.get("param_bytes"), optimizer_bytes=measured.get("optimizer_bytes"),
                bubble=measured.get("bubble"), bubble_ideal=measured.get("bubble_ideal"),
                stages=measured.get("stages"),
            ))
        result = RunResult(
            run_id=new_run_id(), status=outcome.status, config=config.describe(),
            world_size=config.workers, backend=backend, device=[r.device_name for r in ranks],
            ranks=ranks, error=outcome.error, started_at=started, ended_at=now_iso(),
        )
        if outcome.rank_results:
            result.steps = steps_from_ranks(outcome.rank_results, config.warmup_steps)
            result.summary = summarize(result.steps, config, ranks)
            reason = outcome.rank_results[0].get("peak_mem_reason")
            if result.summary["peak_mem_bytes"] is None and reason:
                result.unmeasured["peak_mem_bytes"] = reason
            result.summary["math_flags"] = outcome.rank_results[0].get("math_flags")
            if result.summary["comm_bytes_per_step"] is None:
                result.unmeasured["comm_bytes_per_step"] = unmeasured_wire(config)
        return result

    def _restart_engines(self) -> None:
        n = self._engines.size
        self._engines.close()
        self._engines = EngineSet(self.gpus)
        self._engines.start(n)

    def _warn_once(self, message: str | None) -> None:
        if message and message not in self._warned:
            self._warned.add(message)
            warnings.warn(f"parakit: {message}", stacklevel=3)
