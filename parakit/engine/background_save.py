"""Checkpoints while the run trains (``checkpoint_every=K``): after every global step that is a
multiple of K the run's state is copied to CPU memory and written by DCP in a thread of its
own (``saved_state.save_in_background``), so the loop pauses only for the copy.

Two folders take turns, so a save cut short (a rank died during it) never spoils the complete
one before it; rank 0 writes the state's facts file only once every rank's share and DCP's
metadata are written, and removes it before a folder is written again: a folder with facts is
a whole checkpoint. One save is in flight at a time: the next waits for it, and that wait
counts in its pause. What it costs is measured here: the loop's pause per checkpoint, and the
time each took to be written behind the training.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from concurrent.futures import Future

from parakit.config.switch import STATE_FACTS, Segment
from parakit.engine import saved_state

FAILED_WAIT_S = 5.0


class BackgroundSaver:
    """Saves this rank's share of the state every ``segment.checkpoint_every`` global steps.

    Args:
        segment: where the checkpoints go (``checkpoint_every``, ``checkpoints``).
        rank: this rank; rank 0 writes the facts file.
        alone: one rank without a group (``single``): DCP saves without collectives.
        settings: the run's described settings, kept in the facts file.
    """

    def __init__(self, segment: Segment, rank: int, alone: bool, settings: dict):
        self.every, self.folders, self.first_step = segment.checkpoint_every, segment.checkpoints, segment.first_step
        self.rank, self.alone, self.settings = rank, alone, settings
        self.group = None
        if not alone:
            import torch.distributed as dist

            # DCP's thread runs collectives (its plans, its last barrier) while the training runs
            # its own: on one group they would interleave. note: a rendezvous with every rank.
            self.group = dist.new_group(backend="gloo")
        self.steps: list[int] = []
        """The global steps after which a checkpoint was started."""
        self.pause_s: list[float] = []
        """Per checkpoint, the loop's pause: waiting for the one before, and copying the state."""
        self.write_s: list[float] = []
        """Per checkpoint written, from its start until it was whole on disk."""
        self.error: str | None = None
        """Why a checkpoint failed, if one did (the run goes on: the one before stays whole)."""
        self.losses: list[float | None] = []
        """This launch's global-batch loss per step, as far as the ranks last agreed on it."""
        self._pending: Future | None = None
        self._lock = threading.Lock()

    def due(self, steps_done: int) -> bool:
        return steps_done % self.every == 0

    def save(self, parallel, optimizer, steps_done: int, losses: list) -> None:
        """Start the checkpoint after ``steps_done`` global steps; returns once the state is
        copied. ``losses``: this rank's loss of each step of the launch so far (on its device)."""
        started = time.perf_counter()
        self._wait()  # one in flight at a time: two would interleave their collectives
        self._agree_on(losses)
        folder = self.folders[(steps_done // self.every) % 2]
        if self.rank == 0:
            os.makedirs(folder, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):  # from now on the folder is not a whole checkpoint
                os.remove(os.path.join(folder, STATE_FACTS))
        try:
            future = saved_state.save_in_background(parallel, optimizer, folder, group=self.group, alone=self.alone)
        except Exception as e:  # noqa: BLE001 - the training goes on; the last whole checkpoint stays
            self.error = f"the checkpoint after step {steps_done} failed: {type(e).__name__}: {e}"
            return
        self.pause_s.append(time.perf_counter() - started)
        self.steps.append(steps_done)
        known = list(self.losses)
        future.add_done_callback(lambda f: self._written(f, folder, steps_done, started, known))
        self._pending = future

    def _agree_on(self, losses: list) -> None:
        """The global-batch loss of the steps since the last checkpoint, from every rank's own
        (the mean over the ranks that computed one, as records/summary.py takes it): kept in
        the facts file, so the steps a checkpoint holds keep their losses if a rank dies."""
        mine = [None if loss is None else float(loss) for loss in losses[len(self.losses):]]  # note: a device sync
        every = [mine]
        if self.group is not None:
            import torch.distributed as dist

            every = [None] * dist.get_world_size(self.group)
            dist.all_gather_object(every, mine, group=self.group)  # note: a collective with every rank
        for values in zip(*every):
            known = [v for v in values if v is not None]
            self.losses.append(sum(known) / len(known) if known else None)

    def _written(self, future: Future, folder: str, steps_done: int, started: float, losses: list) -> None:
        """In DCP's thread: the checkpoint is whole on every rank (or failed)."""
        error = future.exception()
        with self._lock:
            if error is not None:
                self.error = f"the checkpoint after step {steps_done} failed: {type(error).__name__}: {error}"
                return
            self.write_s.append(time.perf_counter() - started)
        if self.rank == 0:
            saved_state.write_facts(folder, steps_done, self.settings, time.perf_counter() - started,
                                    losses={"first_step": self.first_step, "values": losses})

    def _wait(self, timeout_s: float | None = None) -> None:
        if self._pending is not None:
            with contextlib.suppress(Exception):  # its failure is kept by _written; a timeout leaves it
                self._pending.result(timeout_s)
            self._pending = None

    def finish(self, failed: bool) -> None:
        """At the segment's end: wait for the checkpoint in flight, then free its group. After a
        failure, at most FAILED_WAIT_S: a checkpoint every rank got to write is whole and kept
        (nothing trained lost); one waiting on a dead peer fails as soon as gloo sees the
        socket close, and leaving the run's group (engine/train.py) aborts it in any case."""
        self._wait(FAILED_WAIT_S if failed else None)
        if failed:
            return
        if self.group is not None:
            import torch.distributed as dist

            dist.destroy_process_group(self.group)
            self.group = None


def measures(saver: BackgroundSaver | None) -> dict:
    """The RankReport fields of a run's checkpoints (none without ``checkpoint_every``)."""
    if saver is None:
        return {}
    return {"checkpoint_steps": [step - saver.first_step for step in saver.steps], "checkpoint_pause_s": list(saver.pause_s),
            "checkpoint_write_s": list(saver.write_s), "checkpoint_error": saver.error}

