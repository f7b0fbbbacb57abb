"""How long a rank waited inside each collective for a late peer.

A collective cannot move data before every rank of its group has entered it, so the time from a
rank's own entry to the last rank's entry is waiting, not communication. The profiler on one rank
cannot see that: gloo's ``gloo:all_reduce`` (an NCCL kernel alike) runs from this rank's entry to
the end, so a fast rank's wait for a straggler read as communication. Here each rank's
collectives in a recorded window are matched across ranks by their order in each step (torch's
own flight recorder matches collectives by sequence number the same way), and

    wait = (the latest entry among the ranks) - (this rank's entry)

clipped to the collective's own length. The breakdown then counts that part as idle time
(engine/breakdown.py ``step_parts``), and the timeline draws it as a wait.

What it needs, and where it does not apply:

- the entries of every rank: one ``all_gather_object`` of a few floats per collective when a
  window is read, which replaces the barrier the profiler already made there (mid-run windows) or
  is one more small collective after the last step (the last window);
- one clock: the profiler's timestamps are wall-clock (epoch) times, which engines on one host
  share. Across hosts, their clocks' offset (NTP: typically well under a millisecond) moves
  time between wait and communication;
- the same collectives in the same order on every rank, in one group of all ranks: ddp, fsdp,
  tensor and the local-SGD family. Pipelines (point-to-point sends between neighbours) and
  hybrid meshes (collectives in sub-groups) are not matched: their waits stay communication,
  and a pipeline's bubble is measured apart (``bubble``). A step whose collectives differ
  between ranks (names or counts) is left unmatched too.
"""

from __future__ import annotations

from typing import Any

from parakit.config.layouts import Strategy
from parakit.engine.breakdown import COMM, STEP_EVENT, by_step, classify

# The layouts whose every collective is in the one group of all ranks, in the same order.
WHOLE_GROUP = {Strategy.DDP, Strategy.FSDP, Strategy.TENSOR}


def matches_peers(strategy: Strategy) -> bool:
    """Whether a run of this layout can tell its waits for a late peer apart (see the module's doc)."""
    return strategy in WHOLE_GROUP


def entries(events, markers, cuda: bool) -> list[list[tuple[str, float, Any]]]:
    """Per recorded step (``markers``, in order), this rank's collectives in the order they
    began: (name, start in us, the event)."""
    out = []
    for marker, own in zip(markers, by_step(events, markers)):
        lo, hi = marker.time_range.start, marker.time_range.end
        step = [(e.name, e.time_range.start, e) for e in own
                if e.name != STEP_EVENT and lo <= e.time_range.start < hi and classify(e, cuda, marker.thread) == COMM]
        out.append(sorted(step, key=lambda c: c[1]))
    return out


def exchange(mine: list[list[tuple[str, float, Any]]], compute_s: list[float]) -> list[tuple[list, list[float]]]:
    """Every rank's (name, start) lists and its compute per step (for the live straggler
    check), by rank: one all_gather_object in the default group. Every rank must call it (it
    also keeps the ranks together, as a barrier would)."""
    import torch.distributed as dist

    plain = [[(name, start) for name, start, _ in step] for step in mine]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, (plain, compute_s))
    return gathered


def waits(mine: list[list[tuple[str, float, Any]]], everyone: list[list[list[tuple[str, float]]]]) -> dict[Any, float]:
    """Event -> microseconds this rank waited in it for the last rank to enter; steps whose
    collectives differ between ranks are left out (no wait counted)."""
    out: dict[Any, float] = {}
    for i, step in enumerate(mine):
        others = [rank[i] if i < len(rank) else None for rank in everyone]
        names = [name for name, _, _ in step]
        if any(o is None or [n for n, _ in o] != names for o in others):
            continue
        for k, (_, start, event) in enumerate(step):
            latest = max(o[k][1] for o in others)
            if latest > start:
                out[event] = latest - start
    return out
