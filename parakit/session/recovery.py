"""A run that survives a lost worker (config/recovery.py says what a run asks for).

With ``checkpoint_every=K`` every segment saves the state in the background every K steps
into two folders beside the run (engine/background_save.py). When a launch fails because a
rank's engine died, and ``on_failure`` is "resume" or "shrink":

1. The dead engine leaves the engine set and the survivors are kept warm (``EngineSet.forget``);
   only engines stuck in a collective are all replaced, as before.
2. The last whole checkpoint of this segment is found: a folder whose facts file rank 0 wrote
   once every share was written, else the state the segment started from, else the run's start.
3. The run goes on from there, as the next segment of the same run: on the same worker count
   (a new engine replaces the dead one) or on the workers that remain (``shrink``: the same
   global batch over fewer ranks). The steps after the checkpoint are trained again and
   counted once; the record keeps a ``Recovery`` for it (records/recovery.py).

A failure that is not a death (the user's code raised, the loss diverged, a hang without a
dead rank) ends the run as before: a resume would repeat it. A run that ends failed or stopped
keeps its last whole checkpoint as its saved state, so ``resume=RUN_ID`` goes on from it.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from parakit.config.recovery import Fault, FailurePolicy, OnFailure
from parakit.config.switch import STATE_FACTS, Segment, with_switch
from parakit.records.recovery import Recovery
from parakit.records.result import FAILED, OK, RunResult
from parakit.records.store import state_folder
from parakit.session.progress import note


@dataclass(frozen=True)
class GoOn:
    """Where a run goes on after a death: its next segment's start, state and settings."""

    step: int
    state_in: str | None
    settings: dict[str, Any]


class FailureGuard:
    """One run's checkpoints and recoveries (``run_segments`` holds one per run).

    Args:
        session: the Session the run is on.
        policy: what the run asked for (checked: ``session.preflight.check_continuation``).
        run_id: the run's id; its checkpoint folders are named after it.
        first_step: the run's first global step (a resumed run's steps done).
        temps: folders removed when the run ends; the checkpoint folders join them.
    """

    def __init__(self, session: Any, policy: FailurePolicy, run_id: str, first_step: int, temps: list[Path]):
        self.session, self.policy = session, policy
        self.folders: tuple[str, ...] = ()
        if policy.checkpoint_every:
            self.folders = tuple(str(Path(session.runs_dir) / f".{run_id}-checkpoint-{k}") for k in (0, 1))
            temps.extend(Path(f) for f in self.folders)
        fault = policy.fault
        self.fault = Fault(rank=fault.rank, step=first_step + fault.step) if fault else None  # on the global steps
        self.failures = 0
        # A replacement registered before it is needed (after a shrink: at the run's end). It
        # stays for the next run that recovers; the first run that does not stops it.
        if policy.recovers:
            session._engines.start_spare()
        else:
            session._engines.stop_spare()
        self.workers_at_start: int | None = None
        self.dead_ranks: list[int] = []
        self._waiting: tuple[Recovery, float | None, float | None] | None = None  # (record, kept until, died at)

    def segment(self, **where: Any) -> Segment:
        """A launch's Segment (``where``: its first_step, state_in, ...) with the checkpoints and the fault."""
        return Segment(**where, checkpoint_every=self.policy.checkpoint_every, checkpoints=self.folders,
                       fault=self.fault)

    def after_launch(self, outcome) -> str | None:
        """What ``launch_segment`` does with the engines after a launch (``Session._after`` as
        is, unless a death will be recovered from: then only the dead engines go)."""
        engines = self.session._engines
        if self.workers_at_start is None:
            self.workers_at_start = engines.size
        dead = engines.dead() if outcome.status == FAILED else []
        self.dead_ranks = [r for r, e in enumerate(outcome.engines) if e in [engines.engines[p] for p in dead]]
        if not dead or not self.policy.recovers or self.failures >= self.policy.max_failures \
                or outcome.engines_unusable:
            return self.session._after(outcome)
        engines.forget(dead)
        return None  # go_on says what became of the run

    def go_on(self, part: RunResult, reports: list, segment: Segment, settings: dict[str, Any]) -> GoOn | None:
        """After a failed launch: where the run goes on, or None where it ends (not a death,
        on_failure="fail", or more deaths than max_failures). Trims ``part`` to the steps the
        checkpoint holds; the next segment's start finishes the record (``recovered``)."""
        if part.status != FAILED or not self.dead_ranks:
            if part.status == FAILED and self.policy.recovers:
                part.warnings.append(f"on_failure={self.policy.on_failure.value!r} goes on after a lost engine "
                                     "only; this failure was not one (going on would repeat it)")
            return None
        self.fault = None  # it fired: the run goes on without it
        if not self.policy.recovers:
            return None
        self.failures += 1
        if self.failures > self.policy.max_failures:
            part.warnings.append(f"a rank's engine died for the {self.failures}th time, more than "
                                 f"max_failures={self.policy.max_failures}: the run ends")
            return None
        died_at = segment.first_step + len(part.steps)
        state_in, checkpoint_step = self.last_checkpoint(segment)
        workers = part.world_size
        if self.policy.on_failure is OnFailure.SHRINK:
            workers -= len(self.dead_ranks)
            settings = with_switch(settings, {"workers": workers})
        try:
            self.session.config(**{**settings, "steps": 2, "warmup_steps": 1})
        except ValueError as e:
            part.warnings.append(f"the run cannot go on with {workers} worker(s): {e}")
            return None
        try:
            if self.policy.on_failure is OnFailure.RESUME:
                self.session._engines.grow(workers)  # the spare takes the dead engine's place
            self.session._engines.start_spare()  # and the next death finds one too
        except Exception as e:  # noqa: BLE001 - the run ends failed, with what it trained and why
            part.warnings.append(f"no engine could replace the dead one ({type(e).__name__}: {e}): the run ends")
            return None
        kept_until, died = _trim(part, reports, checkpoint_step - segment.first_step)
        _agreed_losses(part, state_in, segment.first_step)
        record = Recovery(how=self.policy.on_failure.value, rank=self.dead_ranks[0], died_at_step=died_at,
                          checkpoint_step=checkpoint_step, steps_retrained=died_at - checkpoint_step,
                          workers_before=part.world_size, workers_after=workers,
                          error=(part.error or "").splitlines()[0] if part.error else "")
        self._waiting = (record, kept_until, died)
        part.warnings.append(f"rank {record.rank}'s engine died at step {died_at} ({record.error}); the run "
                             f"went on from step {checkpoint_step} on {workers} worker(s)")
        part.status, part.error = OK, None  # its kept steps were made; the death is the Recovery's
        if self.session.progress:
            note(f"[parakit] rank {record.rank}'s engine died at step {died_at}; going on from step "
                 f"{checkpoint_step} on {workers} worker(s)")
        return GoOn(checkpoint_step, state_in, settings)

    def recovered(self, began: float | None) -> Recovery | None:
        """The Recovery the segment that began at ``began`` (epoch seconds) goes on after, if any."""
        if self._waiting is None:
            return None
        record, kept_until, died = self._waiting
        self._waiting = None
        lost = began - kept_until if began is not None and kept_until is not None else None
        return replace(record, lost_s=lost, recover_s=began - died if began is not None and died is not None else None)

    def last_checkpoint(self, segment: Segment) -> tuple[str | None, int]:
        """The last whole state of this segment: its newest checkpoint, else the state it began
        from, else the run's start (no state). Returns (folder or None, steps done in it)."""
        best: tuple[str | None, int] = (segment.state_in, segment.first_step)
        for folder in self.folders:
            steps = _steps_done(folder)
            if steps is not None and steps > best[1]:
                best = (folder, steps)
        return best

    def keep_checkpoint(self, run_id: str, ended_ok: bool, last: Segment | None) -> tuple[str, int] | None:
        """Nothing trained lost: a run that did not end ok keeps its last whole checkpoint as
        its saved state, so ``resume=RUN_ID`` goes on from it (before the run's temporary
        folders go). Returns (its folder, its steps), or None where there is none to keep, or
        the run saved its own state (save_state=True)."""
        if ended_ok or last is None or not self.folders:
            return None
        kept = state_folder(self.session.runs_dir, run_id)
        folder, steps = self.last_checkpoint(last)
        if folder not in self.folders or (kept / STATE_FACTS).is_file():
            return None
        shutil.rmtree(kept, ignore_errors=True)  # a save_state cut short: not a whole state
        shutil.move(folder, kept)
        return str(kept), steps

    def restore_engines(self) -> None:
        """At the run's end, after a shrink: the session gets its engine count back for the
        next run (the spare started for it takes the lost engine's place)."""
        engines = self.session._engines
        if self.workers_at_start is not None and engines.size < self.workers_at_start:
            try:
                engines.grow(self.workers_at_start)
            except Exception as e:  # noqa: BLE001 - the run is saved regardless; the next run grows them
                note(f"[parakit] the lost engine could not be replaced yet ({type(e).__name__}: {e})")


def _facts(folder: str | None) -> dict[str, Any]:
    """A whole checkpoint's facts file (written last), or {} where there is none."""
    try:
        facts = json.loads((Path(folder) / STATE_FACTS).read_text()) if folder else {}
        return facts if isinstance(facts, dict) else {}
    except (OSError, ValueError):
        return {}


def _steps_done(folder: str) -> int | None:
    """The steps a whole checkpoint holds, or None."""
    try:
        return int(_facts(folder)["steps_done"])
    except (KeyError, TypeError, ValueError):
        return None


def _agreed_losses(part: RunResult, folder: str | None, first_step: int) -> None:
    """The kept steps' losses as every rank agreed on them at the checkpoint: a dead rank took
    its own share of each step's loss with it, so the survivors' alone are not the global batch's."""
    losses = _facts(folder).get("losses") or {}
    values = losses.get("values") or []
    if losses.get("first_step") != first_step:
        return
    part.steps = [replace(s, loss=values[s.step]) if s.step < len(values) else s for s in part.steps]


def _trim(part: RunResult, reports: list, keep: int) -> tuple[float | None, float | None]:
    """Keep ``part``'s first ``keep`` steps (the checkpoint's); the others are trained again.
    Returns, in epoch seconds of the surviving ranks' clocks, when the last kept step ended (or
    the segment's loop began) and when their loop ended (the death, as they saw it)."""
    part.steps = [s for s in part.steps if s.step < keep]
    began = max((r.loop_started_at for r in reports if r is not None and r.loop_started_at), default=None)
    died = max((r.loop_ended_at for r in reports if r is not None and r.loop_ended_at), default=None)
    last = part.steps[-1].time_s if part.steps and part.steps[-1].time_s is not None else 0.0
    return (began + last if began is not None else None), died
