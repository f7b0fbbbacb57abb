"""When, inside its recorded steps, one rank computed, communicated and waited: ``RankTimeline``.

The engine builds it from the same profiler events, classified by the same rule, as the time
breakdown (engine/breakdown.py, engine/step_spans.py), thins it to a bounded number of spans, and
sends it back with the rank's report; the run record keeps it per rank (``RankInfo.timeline``) and
``plots.timeline`` draws it. It lives here, where both sides may import it.

Each span is on one lane of the rank's row:

- ``main``: the step as the breakdown splits it, in time: compute (by phase: forward, backward,
  optimizer, a pipeline's micro-batch action, a taught straggler's extra work), exposed
  communication (a collective runs, nothing computes) and idle (neither; a wait for a late peer
  inside a collective included);
- ``comm``: every collective as it ran, hidden behind compute or not, with its bytes, and the part
  of it spent waiting for the last rank to enter (``wait``);
- ``stream N`` (GPU): the kernels of one CUDA stream.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from parakit.records.record_view import RecordView

MAIN, COMM = "main", "comm"
COMPUTE, EXPOSED, IDLE, COLLECTIVE, WAIT = "compute", "exposed communication", "idle", "collective", "wait"


class TimelineSpan(NamedTuple):
    """One stretch of a lane: seconds since the rank's window began (``RankTimeline.origin_s``)."""

    start_s: float
    end_s: float
    lane: str
    """``main``, ``comm`` or ``stream N`` (see the module's doc)."""
    kind: str
    """compute, exposed communication, idle, collective or wait."""
    name: str
    """What it was: the phase (forward, backward, optimizer, straggler), a pipeline action as
    torch names it ("0F1": stage 0, forward, micro-batch 1), a collective (all_reduce)."""
    bytes: int | None = None
    """A collective's bytes, as the profiler recorded its tensor shapes (merged spans: summed);
    None where unknown."""


@dataclass(frozen=True, kw_only=True, eq=False)
class RankTimeline(RecordView):
    """One rank's recorded window as spans, thinned, not truncated: spans of one kind closer than
    ``merged_below_s`` are drawn as one, so every second of the window is still on the row."""

    READERS = {"spans": lambda spans: [TimelineSpan(*s) for s in spans],
               "step_bounds_s": lambda bounds: [tuple(b) for b in bounds]}  # JSON has no tuples

    rank: int
    """The rank."""
    origin_s: float
    """When its first recorded step began, epoch seconds (the profiler's clock, which engines on
    one host share; across hosts their clocks' offset shifts the rows)."""
    steps: list[int]
    """The recorded steps, in order."""
    step_bounds_s: list[tuple[float, float]]
    """Each recorded step's (start, end), seconds since ``origin_s``."""
    spans: list[TimelineSpan] = field(default_factory=list)
    """Every lane's spans, in time order per lane."""
    merged_below_s: float = 0.0
    """Gaps shorter than this between spans of one kind were closed, and shorter spans of
    another kind drawn as part of their neighbours (the breakdown's sums are exact; the drawing
    is not below this)."""
    export_s: float = 0.0
    """Seconds this rank spent building the spans (after the measured steps' clock stopped)."""
    planned: list[str | None] | None = None
    """A pipeline: this rank's actions in the schedule's own order (torch's ``pipeline_order``,
    "0F1" for stage 0's forward of micro-batch 1, None for a planned idle slot); else None."""

    def lane(self, name: str) -> list[TimelineSpan]:
        """The spans of one lane, in time order."""
        return [s for s in self.spans if s.lane == name]

    def total_s(self, kind: str, lane: str = MAIN) -> float:
        """Seconds of one kind of span on one lane, over the window."""
        return sum(s.end_s - s.start_s for s in self.spans if s.lane == lane and s.kind == kind)
