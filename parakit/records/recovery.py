"""A lost worker in the run record: one ``Recovery`` per engine death the run went on after
(``on_failure="resume"`` or ``"shrink"``), kept on the segment that continued the run
(``SegmentRecord.recovered``; ``RunResult.recovered`` lists them in order).

The time axis of the record keeps each step once: the steps made after the last checkpoint
and lost with the worker are left out of the steps, and the time they took, with the pause
until the resumed segment's first step, is ``lost_s``: the gap before that segment on the
time axis, as a switch's pause is (records/segments.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from parakit.records.record_view import RecordView


@dataclass(frozen=True, kw_only=True, eq=False, repr=False)
class Recovery(RecordView):
    """One engine death the run went on after. Read by attribute, or as a Mapping."""

    how: str
    """"resume" (the same worker count, the dead engine replaced) or "shrink" (the workers left)."""
    rank: int | None
    """The rank whose engine died (None where the run could not tell)."""
    died_at_step: int
    """The run's step the rank died at: the steps before it were made, it was not."""
    checkpoint_step: int
    """The steps done in the last whole checkpoint, where training went on from."""
    steps_retrained: int
    """Steps made twice: after the checkpoint, before the death (counted once in the record)."""
    workers_before: int
    workers_after: int
    lost_s: float | None = None
    """Wall clock the death cost: from the end of the checkpoint's step to the resumed
    segment's first step (the lost steps, finding the death, new engines, the state loaded)."""
    recover_s: float | None = None
    """From the death (the surviving ranks' loop ended) to the resumed segment's first step."""
    error: str = ""
    """The failure's first line, as the run would have ended with it."""

    def label(self) -> str:
        """The segment's label: what happened, in a few words, for markers and headlines."""
        who = f"rank {self.rank}" if self.rank is not None else "a rank"
        text = f"recovered: {who} died at step {self.died_at_step}, resumed from {self.checkpoint_step}"
        return text + (f" on {self.workers_after} worker(s)" if self.how == "shrink" else "")
