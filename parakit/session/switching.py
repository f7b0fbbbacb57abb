"""A run as a chain of segments: scheduled switches (``switch=``), live ones
(``Session.switch``), saving the final state (``save_state=True``) and resuming from one
(``resume=RUN_ID``). config/switch.py says what carries over and what starts afresh.

Every run of a Session goes through ``run_segments``: a run that never switches is one
segment, launched and recorded as before. Each later segment is a launch on the engines its
worker count needs; the state between them travels through a DCP checkpoint on the run
store's disk (local engines, or hosts that share that folder).
"""

from __future__ import annotations

import shutil
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

from parakit.cluster.launch import launch
from parakit.config.run import RunConfig, Strategy
from parakit.config.switch import STATE_FACTS, Segment, check_settings, segment_settings, with_switch
from parakit.records.rank import rank_info
from parakit.records.result import FAILED, RunResult, headline, new_run_id, now_iso, run_label
from parakit.records.run_cost import record_costs
from parakit.records.segments import join, segment_record
from parakit.records.store import save_rank_files, save_run, state_folder
from parakit.records.summary import measure
from parakit.session.preflight import check_continuation
from parakit.session.progress import ProgressPrinter
from parakit.session.recovery import FailureGuard

ANSWER_TIMEOUT_S = 600.0  # a live switch waits at most this long for the ranks to agree


class LiveSwitch:
    """The run going on, as ``Session.switch`` (another thread) sees it: asks are checked
    against its current settings and answered with the step they took effect at."""

    def __init__(self, session: Any, settings: dict[str, Any]):
        self.session, self.settings = session, settings
        self.event = threading.Event()  # set: the watch signals the ranks (cluster/launch.py)
        self._lock = threading.Lock()
        self._asked: tuple[dict[str, Any], dict[str, Any]] | None = None
        self._answered = threading.Event()
        self._answer: int | str | None = None

    def ask(self, change: dict[str, Any]) -> int:
        with self._lock:
            if self._asked is not None:
                raise RuntimeError("a switch is already on its way; wait for it before asking another")
            settings = with_switch(self.settings, check_settings(change))
            self.session.config(**settings)  # the checks of a fresh run, before any signal
            self._asked, self._answer = (settings, change), None
            self._answered.clear()
            self.event.set()
        if not self._answered.wait(ANSWER_TIMEOUT_S):
            raise RuntimeError(f"the ranks did not reach a switch point within {ANSWER_TIMEOUT_S:.0f} s")
        if isinstance(self._answer, str):
            raise RuntimeError(self._answer)
        return self._answer

    def take(self) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """The switch asked for, if any (the run thread, between segments)."""
        with self._lock:
            return self._asked

    def answer(self, outcome: int | str) -> None:
        """The step the switch took effect at, or why it did not."""
        with self._lock:
            self._asked, self._answer = None, outcome
            self.event.clear()
            self._answered.set()


def run_segments(session: Any, config: RunConfig, settings: dict[str, Any], *, switch: Any = None,
                 save_state: bool = False, resume: str | None = None, on_progress=None, prices=None,
                 **failures: Any) -> RunResult:
    """Train ``config`` as a chain of segments (see the module's docstring), save it as one run.
    ``failures``: checkpoint_every, on_failure, max_failures and fault (session/recovery.py)."""
    go_on = check_continuation(session.preflight(), config, settings, switch=switch, save_state=save_state,
                               resume=resume, runs_dir=session.runs_dir, **failures)
    plan, state_in, first, settings = go_on.plan, go_on.state_in, go_on.first_step, go_on.settings
    run_id, temps = new_run_id(), []
    guard = FailureGuard(session, go_on.failures, run_id, first, temps)
    final = state_folder(session.runs_dir, run_id) if save_state else None
    live = LiveSwitch(session, settings)
    session._live = live
    printer = ProgressPrinter(config) if session.progress and on_progress is None else None
    ends = [first + step for step, _ in plan] + [first + config.steps]
    parts, records = [], []
    step, previous, save_s, ended, cannot, segment, kept = first, None, None, None, None, None, None
    try:
        while step < ends[-1]:
            end = next(e for e in ends if e > step)
            n = end - step
            try:
                seg_config = session.config(**segment_settings(settings, n, config.warmup_steps))
            except ValueError as e:
                if not parts:
                    raise
                # A later segment that cannot start (a live switch the preflight never saw):
                # the steps trained so far are kept and saved, with the reason.
                cannot = f"the segment from step {step} could not start: {e}"
                break
            last = end == ends[-1]
            out = str(final) if last and final else str(_temp(session.runs_dir, run_id, len(parts), temps))
            segment = guard.segment(first_step=step, state_in=state_in, state_out=out,
                                    save_at_end=not last or bool(final), save_on_stop=bool(final))
            progress = _offset(on_progress or printer, step - first, config.steps)
            try:
                part, reports = launch_segment(session, seg_config, segment, progress, prices, live.event,
                                               after=guard.after_launch)
            except Exception as e:  # noqa: BLE001 - engines that cannot start, a group that cannot form
                if not parts:
                    raise
                cannot = f"the segment from step {step} could not start: {type(e).__name__}: {e}"
                break
            load_s = _slowest(reports, "state_load_s")
            # Training paused from the last rank's last step to the last rank's first step again
            # (after a death: from the end of the checkpoint's step, records/recovery.py).
            began = _slowest(reports, "loop_started_at")
            recovered = guard.recovered(began)
            switch_s = began - ended if parts and began is not None and ended is not None else None
            switch_s, save_s = (recovered.lost_s, None) if recovered else (switch_s, save_s)
            resumed = None if part.ok else guard.go_on(part, reports, segment, settings)  # trims the part
            records.append(segment_record(len(parts), part, step, previous, switch_s, save_s, load_s, recovered))
            parts.append(part)
            previous, save_s, ended = part.config, _slowest(reports, "state_save_s"), _slowest(reports, "loop_ended_at")
            if resumed:  # a death recovered from: the next segment goes on from the checkpoint
                step, state_in, settings = resumed.step, resumed.state_in, resumed.settings
                live.settings = settings
                if printer:  # a shrink runs on fewer workers
                    printer.label = run_label(session.config(**settings).describe())
                continue
            step += len(part.steps)
            state_in = out
            asked = live.take()
            switched = any(r is not None and r.switching for r in reports)
            if not part.ok or (len(part.steps) < n and not switched) or step >= ends[-1]:
                if asked:
                    live.answer(f"the run ended at step {step} before the switch could take effect")
                break  # ended, failed or stopped: the steps made are kept
            if step == end:  # a scheduled switch
                settings = with_switch(settings, plan[ends.index(end)][1])
            if asked:
                settings = _asked_on_top(session, settings, asked[1], live, step)
            live.settings = settings
            if printer:
                printer.label = run_label(session.config(**settings).describe())
    finally:
        session._live = None
        guard.restore_engines()
        if live.take():
            live.answer("the run ended before the switch could take effect")
        kept = guard.keep_checkpoint(run_id, bool(parts) and all(p.ok for p in parts) and not cannot, segment)
        for folder in temps:
            shutil.rmtree(folder, ignore_errors=True)
    result = parts[0] if len(parts) == 1 else join(parts, records, run_id, _run_config(parts, config, plan))
    result.run_id = run_id
    if cannot:
        result.status, result.error = FAILED, cannot
        result.warnings.append(cannot)
    if len(parts) == 1 and first:  # a resumed run's steps are numbered on from the run it continues
        result.steps = [replace(s, step=first + s.step) for s in result.steps]
    if len(parts) > 1 or plan:
        result.segments = records
    result.resumed_from = resume
    result.state_dir = str(final) if final and (final / STATE_FACTS).is_file() else None
    if kept and not result.state_dir:
        result.state_dir = kept[0]
        result.warnings.append(f"its last checkpoint (step {kept[1]}) is kept: resume={run_id!r} goes on from it")
    record_costs(result, session.prices if prices is None else prices)
    if printer:
        printer.done(headline(result))
    save_run(result, session.runs_dir)
    return result


def launch_segment(session: Any, config: RunConfig, segment: Segment, on_progress, prices,
                   switch: threading.Event | None, after=None) -> tuple[RunResult, list]:
    """One launch on the engines this segment needs, measured as a run of its own; ``after``
    deals with the engines once it ended (``Session._after``'s work, by default)."""
    engines = session._engines
    engines.grow(config.workers)
    backend, warning = None, None
    if config.strategy is not Strategy.SINGLE:
        backend, warning = engines.ensure_group(config.workers)
        session._warn_once(warning)
    started = now_iso()
    outcome = launch(engines, config, on_progress, stop=session._stop, hang_timeout_s=session.hang_timeout_s,
                     segment=segment, switch=switch)
    ranked = outcome.engines or engines.ranks(config.workers)
    reports = outcome.rank_results or [None] * len(ranked)  # a RankReport per rank, or None
    ranks = [rank_info(report, rank=rank, engine_id=e.engine_id, pid=e.pid, host=e.host, device=e.device,
                       device_name=e.device_name, gpu_index=e.gpu_index, threads=e.threads)
             for rank, (e, report) in enumerate(zip(ranked, reports))]
    result = RunResult(run_id=new_run_id(), status=outcome.status, config=config.describe(),
                       world_size=config.workers, backend=backend, device_names=[r.device_name for r in ranks],
                       ranks=ranks, error=outcome.error, started_at=started, ended_at=now_iso(),
                       network=session.network())
    measure(result, config, outcome.rank_results)
    save_rank_files(result, outcome.rank_results, session.runs_dir)
    if warning:
        result.warnings.append(warning)
    repaired = (after or session._after)(outcome)
    if repaired:
        result.warnings.append(repaired)
    if result.ok and any(r is not None and r.error for r in reports):  # the state could not be saved
        result.status, result.error = FAILED, next(r.error for r in reports if r is not None and r.error)
    return result, reports


def _asked_on_top(session: Any, settings: dict[str, Any], change: dict[str, Any], live: LiveSwitch,
                  step: int) -> dict[str, Any]:
    """A live switch applied at ``step``, over a scheduled one that fell on the same step if
    any; answered with the step, or with why the two did not fit together."""
    try:
        wanted = with_switch(settings, change)
        session.config(**wanted)
    except ValueError as e:
        live.answer(f"the switch did not fit the scheduled one at step {step}: {e}")
        return settings
    live.answer(step)
    return wanted


def _run_config(parts: list[RunResult], config: RunConfig, plan) -> dict[str, Any]:
    """The run's config as recorded: its first segment's settings, its whole length, and the
    switches asked for (the segments say which took effect, and where)."""
    described = {**parts[0].config, "steps": config.steps, "warmup_steps": config.warmup_steps}
    if plan:
        described["switch"] = {str(step): dict(change) for step, change in plan}
    return described


def _offset(on_progress, done: int, steps: int):
    """Progress of a segment as progress of the run: its steps counted from the run's start."""
    if on_progress is None:
        return None
    return lambda p: on_progress({**p, "step": p["step"] + done, "steps": steps} if "step" in p else p)


def _slowest(reports: list, name: str) -> float | None:
    values = [getattr(r, name) for r in reports if r is not None and getattr(r, name) is not None]
    return max(values) if values else None


def _temp(runs_dir: Any, run_id: str, index: int, temps: list[Path]) -> Path:
    """Where segment ``index`` leaves its state for the next one; removed when the run ends."""
    folder = Path(runs_dir) / f".{run_id}-switch-{index}"
    temps.append(folder)
    return folder
