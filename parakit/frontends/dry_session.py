"""A Session that starts no engine, for a notebook's dry run (``parakit preflight``).

``DrySession`` takes what ``Session`` takes and runs the same preflight checks on every call
(``check_run``, ``check_continuation``, ``check_runs``, ``check_bench``, ``check_count``, a
fit's and the advisor's), and writes each request and its answer to a ``CheckLog``. Where the
real session would then train, it returns a stub ``RunResult`` (status ok, no step, no
figure), so a notebook's loop of runs goes on to its next request. Where it would measure
something else (a benchmark, a fit's search, the advisor's calibration, a cell on the ranks),
it raises ``DryRunStop``: the request was checked, and what follows reads a measurement.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from IPython.core.error import UsageError

from parakit.config.prices import check_prices
from parakit.config.run import Device, RunConfig
from parakit.config.switch import STATE_FACTS
from parakit.records.engine_facts import EngineStatus
from parakit.records.result import OK, RunResult, new_run_id
from parakit.records.store import DEFAULT_RUNS_DIR, read_runs, runs_frame, state_folder
from parakit.session.fit import run_fit
from parakit.session.preflight import (EngineFacts, check_bench, check_continuation, check_count, check_run,
                                       engines_here)
from parakit.session.sweep import combinations, run_sweep


class DryRunStop(Exception):
    """A request was checked; the dry run stops the cell where the real one would measure."""


@dataclass(eq=False)  # one request is one object: two alike are still two
class Check:
    """One request of a notebook (a ``%parakit`` line, a Session call) and the preflight's answer."""

    cell: int
    """The notebook's cell it came from, from 1 (markdown cells counted, as Jupyter shows them)."""
    request: str
    """What was asked, as the notebook asked it."""
    refusal: str | None = None
    """The refusal's one line; None where the request was accepted."""
    stopped: bool = False
    """Accepted, then the cell stopped: what came next reads a measurement."""
    error: BaseException | None = field(default=None, repr=False)
    """The refusal raised, to tell whether the notebook caught it."""


class CheckLog:
    """Every request of a dry run, in order. A request made inside another (the magic asking
    its session) is part of that one and is not written again."""

    def __init__(self) -> None:
        self.checks: list[Check] = []
        self.cell = 0
        self._depth = 0

    @contextlib.contextmanager
    def request(self, text: str) -> Iterator[None]:
        if self._depth:
            yield
            return
        check = Check(self.cell, text)
        self.checks.append(check)
        self._depth += 1
        try:
            yield
        except (ValueError, UsageError) as e:  # what the preflight and the magics refuse with
            check.refusal, check.error = " ".join(str(e).split()), e
            raise
        except DryRunStop:
            check.stopped = True
            raise
        finally:
            self._depth -= 1


def call_text(name: str, *args: Any, **kwargs: Any) -> str:
    """A call as a notebook wrote it, e.g. "session.run(SineNet, strategy='ddp')", cut at 160 characters."""
    def show(value: Any) -> str:
        return getattr(value, "__name__", None) or repr(value)

    text = f"{name}({', '.join([show(a) for a in args] + [f'{k}={show(v)}' for k, v in kwargs.items()])})"
    return text if len(text) <= 160 else text[:157] + "..."


class DrySession:
    """``Session``'s interface, checked and never run (see the module's doc). A dry run binds
    ``log`` and ``device_name`` in a subclass and puts it where ``Session`` is looked up."""

    log: CheckLog
    device_name: str = "CPU"
    """What ``status()`` says each GPU is (the machine's GPU name)."""

    def __init__(self, workers: int | None = None, *, device: str = "auto", gpus: list[int] | None = None,
                 runs_dir: str | os.PathLike = DEFAULT_RUNS_DIR, progress: bool = True, auto_restart: bool = True,
                 hang_timeout_s: float = 120.0, engines: str = "local", profile: str | None = None,
                 cluster_id: str | None = None, ifname: str | None = None, link: str | None = None,
                 prices: Any = None):
        given = {k: v for k, v in dict(device=device, gpus=gpus, engines=engines, link=link, prices=prices).items()
                 if v not in (None, "auto", "local")}
        with self.log.request(call_text("Session", *([workers] if workers is not None else []), **given)):
            self.prices = check_prices(prices)
            wanted = engines_here(workers=workers, device=device, gpus=gpus, runs_dir=runs_dir, engines=engines,
                                  profile=profile, cluster_id=cluster_id, ifname=ifname, link=link)
        self.device = Device.parse(device, "device")
        self.launch, self.facts, self.gpus, self.workers = wanted.launch, wanted.facts, wanted.gpus, wanted.workers
        self.runs_dir = runs_dir
        self.progress = False  # a dry run prints no progress line
        self.busy = False

    # -- what the magics and notebooks read ------------------------------------------------
    def preflight(self) -> EngineFacts:
        return EngineFacts(self.facts, self.gpus, self.workers, self.launch)

    def config(self, **settings: Any) -> RunConfig:
        return check_run(self.preflight(), **settings)

    def status(self) -> list[EngineStatus]:
        """One row per engine, as pinning would leave it: every GPU engine sees its GPU as cuda:0."""
        rows = []
        for rank in range(self.workers):
            gpu = self.gpus[rank % len(self.gpus)] if self.gpus else None  # round robin, as engines are pinned
            rows.append(EngineStatus(
                rank=rank, engine_id=rank, host="dry-run", local_rank=rank, pid=0, alive=True,
                device="cuda:0" if gpu else "cpu", device_name=self.device_name if gpu else "CPU",
                threads=max(1, self.facts.cpu_count // self.workers), in_group=False, backend=None,
                rss_bytes=None, peak_rss_bytes=None, memory_reason="a dry run starts no engine",
                gpu_index=gpu.index if gpu else None))
        return rows

    def runs(self):
        return runs_frame(read_runs(self.runs_dir))

    def __repr__(self) -> str:
        where = f"{len(self.gpus)} GPU(s)" if self.gpus else "CPU"
        return f"Session({self.workers} engines on {where}, runs in {self.runs_dir!s}; dry run: none started)"

    # -- requests ----------------------------------------------------------------------------
    def run(self, model: Any = "mlp", *, on_progress: Any = None, prices: Any = None, switch: Any = None,
            save_state: bool = False, resume: str | None = None, checkpoint_every: int | None = None,
            on_failure: str = "fail", max_failures: int = 3, fault: str | None = None, **settings: Any) -> RunResult:
        """Session.run's checks; returns a stub result (and, with save_state, the facts a resume checks)."""
        failures = dict(checkpoint_every=checkpoint_every, on_failure=on_failure, max_failures=max_failures,
                        fault=fault)
        going_on = {k: v for k, v in dict(switch=switch, save_state=save_state, resume=resume, **failures).items()
                    if v and (k, v) not in (("on_failure", "fail"), ("max_failures", 3))}
        with self.log.request(call_text("session.run", model, **settings, **going_on)):
            config = self.config(model=model, **settings)
            check_prices(prices)
            check_continuation(self.preflight(), config, {"model": model, **settings}, switch=switch,
                               save_state=save_state, resume=resume, runs_dir=self.runs_dir, **failures)
        self.workers = max(self.workers, config.workers)  # a run that asks for more engines adds them
        result = RunResult(run_id=new_run_id(), status=OK, config=config.describe(), world_size=config.workers,
                           backend=None, device_names=[self.device_name if self.gpus else "CPU"] * config.workers)
        if save_state:
            self._saved_state(result.run_id, config)
        return result

    def _saved_state(self, run_id: str, config: RunConfig) -> None:
        """What ``check_resume`` reads of a saved state, so a later resume is checked for real:
        the steps done and the settings (no tensors)."""
        folder = state_folder(self.runs_dir, run_id)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / STATE_FACTS).write_text(json.dumps({"steps_done": config.steps, "settings": config.describe()}))
        (folder / ".metadata").touch()

    def sweep(self, workers: Any = None, *, on_run: Any = None, prices: Any = None, repeats: int = 1,
              **settings: Any) -> list[RunResult]:
        """Every combination checked before the first (``run_sweep``), then each run's checks."""
        with self.log.request(call_text("session.sweep", workers=workers, **settings)):
            return run_sweep(self, combinations(workers, **settings), on_run, prices, repeats)

    def bench_comm(self, workers: int | None = None, *, sizes: Any = None, collectives: Any = None,
                   repeats: int = 10, warmup: int = 3, max_size: Any = None, dtype: str = "float32",
                   on_progress: Any = None):
        with self.log.request(call_text("session.bench_comm", workers, sizes=sizes, collectives=collectives)):
            kwargs = check_bench(self.preflight(), workers, sizes=sizes, collectives=collectives, repeats=repeats,
                                 warmup=warmup, max_size=max_size, dtype=dtype)
            self.workers = max(self.workers, kwargs["workers"])
            raise DryRunStop("bench_comm was checked; a dry run measures nothing")

    def fit(self, model: Any = "gpt", vary: str = "depth", memory_limit: Any = "1GB", strategies: Any = ("ddp", "fsdp"),
            workers: int | None = None, *, start: int | None = None, high: int | None = None, **settings: Any):
        """``run_fit``'s checks; its search stops (a dry run binds ``session.fit._search`` to a stop)."""
        with self.log.request(call_text("session.fit", model, vary=vary, memory_limit=memory_limit,
                                        strategies=strategies)):
            return run_fit(self, model, vary, memory_limit, strategies, workers, start, high, settings)

    def advise(self, model: Any = "mlp", **settings: Any):
        """``parakit.advise``'s checks; its calibration stops (a dry run binds ``advice._advise`` to a stop)."""
        from parakit.advisor.advice import advise  # as Session.advise: the one import up a layer

        with self.log.request(call_text("session.advise", model, **settings)):
            return advise(model, session=self, **settings)

    def execute(self, code: str, workers: int | None = None, names: Any = None):
        with self.log.request(call_text("session.execute", workers=workers)):
            check_count(self.preflight(), self.workers if workers is None else workers)
            raise DryRunStop("a cell on the ranks was checked; a dry run runs no code on engines")

    def switch(self, **settings: Any) -> int:
        raise DryRunStop("a dry run has no run going to switch")

    def stop(self) -> bool:
        return False

    def restart(self) -> None:
        return None

    def close(self) -> None:
        return None

    def __enter__(self) -> DrySession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def stop(what: str):
    """A function that stands in for ``what`` (a search, a calibration): it stops the cell."""
    def stopped(*args: Any, **kwargs: Any):
        raise DryRunStop(f"{what} was checked; a dry run measures nothing")
    return stopped
