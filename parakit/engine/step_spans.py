"""A rank's recorded window as spans in time (records/rank_timeline.py), from the same events
and the same rule as the breakdown (breakdown.py ``step_parts``, through ``classify``):

- the main lane splits each step as the breakdown does, in time: compute, exposed
  communication (a collective runs, nothing computes), idle (neither; a wait for a late peer
  included). Compute is named by phase: forward, backward (autograd's evaluate_function
  ranges), optimizer (``Optimizer.step``/``zero_grad``), a pipeline's micro-batch action
  (``parakit.pp:0F1``: strategies/pipeline.py names them as torch's schedules do), a taught
  straggler's extra work (``parakit.straggler``);
- the comm lane holds each collective as it ran, with its bytes, its wait for the last peer
  drawn apart;
- on a GPU, a lane per CUDA stream holds its kernels.

Thinned, not truncated: spans of one kind and name closer than a share of the step
(``FINEST_SHARE``) are drawn as one, and a shorter span joins its neighbour, the share doubling
until each lane holds at most ``MOST_SPANS`` per step. A window of many small operators is
thus drawn whole, at a coarser grain. Building it costs milliseconds after the measured steps
(``RankTimeline.export_s``)."""

from __future__ import annotations

import bisect
from typing import Any

from parakit.engine.breakdown import (
    COMPUTE, STRAGGLER as STRAGGLER_EVENT, _on_gpu, by_step, classify, intersect, step_parts, union,
)
from parakit.records.pipeline_plan import parse
from parakit.records.rank_timeline import (
    COLLECTIVE, COMM, EXPOSED, IDLE, MAIN, WAIT, RankTimeline, TimelineSpan,
)
from parakit.records.rank_timeline import COMPUTE as COMPUTE_SPAN

FINEST_SHARE = 0.002  # of the step: closer spans of one kind are drawn as one
MOST_SPANS = 60  # per lane per step, at most: a figure of a few hundred bars draws fast and stays small
PIPELINE_EVENT = "parakit.pp:"
US = 1e-6


def rank_timeline(events, markers, steps: list[int], cuda: bool, waits: dict, rank: int) -> RankTimeline:
    """The window of ``markers`` (one per recorded step, in order) as a thinned RankTimeline;
    ``events`` all of the window's, or already split by step (breakdown.py ``by_step``)."""
    per_step = events if events and isinstance(events[0], list) else by_step(events, markers)
    origin = markers[0].time_range.start
    phases = _Phases([e for own in per_step for e in own], markers[0].thread, cuda)
    spans: list[TimelineSpan] = []
    finest = 0.0
    for marker, own in zip(markers, per_step):
        parts = step_parts(own, cuda, marker, waits)
        step_us = parts.hi - parts.lo
        share = FINEST_SHARE
        while True:
            gap = step_us * share
            lanes = [_main_lane(parts, phases, gap), _comm_lane(parts, gap), *(_stream_lanes(parts, gap) if cuda else [])]
            if all(len(lane) <= MOST_SPANS for lane in lanes) or share > 0.1:
                break
            share *= 2
        finest = max(finest, gap * US)
        spans += [TimelineSpan((a - origin) * US, (b - origin) * US, lane, kind, name, nbytes)
                  for lane_spans in lanes for a, b, lane, kind, name, nbytes in lane_spans]
    bounds = [((m.time_range.start - origin) * US, (m.time_range.end - origin) * US) for m in markers]
    return RankTimeline(rank=rank, origin_s=origin * US, steps=list(steps), step_bounds_s=bounds, spans=spans,
                        merged_below_s=finest)


class _Phases:
    """What phase of the step a moment of compute belongs to, from the ranges the training
    thread marks: the first kind that covers it, in the order below, else forward."""

    def __init__(self, events, thread: int, cuda: bool):
        ranges: dict[str, list[tuple[float, float, str]]] = {"straggler": [], "pipeline": [], "optimizer": [],
                                                               "backward": []}
        self.launches: dict[int, float] = {}
        for e in events:
            if e.thread != thread or _on_gpu(e):
                continue
            a, b, name = e.time_range.start, e.time_range.end, e.name
            if cuda and e.correlation is not None:
                self.launches[e.correlation] = a  # a kernel is in the phase it was launched in
            if name == STRAGGLER_EVENT:
                ranges["straggler"].append((a, b, "straggler"))
            elif name.startswith(PIPELINE_EVENT):
                ranges["pipeline"].append((a, b, name[len(PIPELINE_EVENT):]))
            elif name.startswith(("Optimizer.step#", "Optimizer.zero_grad#")):
                ranges["optimizer"].append((a, b, "optimizer"))
            elif name.startswith("autograd::engine::evaluate_function"):
                ranges["backward"].append((a, b, "backward"))
        self.pipeline = bool(ranges["pipeline"])
        self.ranges = [sorted(r) for r in ranges.values()]
        self.starts = [[a for a, _, _ in r] for r in self.ranges]
        self.cuts = sorted({t for r in self.ranges for a, b, _ in r for t in (a, b)})

    def at(self, t: float) -> str:
        for ranges, starts in zip(self.ranges, self.starts):
            i = bisect.bisect_right(starts, t) - 1
            if i >= 0 and ranges[i][0] <= t < ranges[i][1]:
                return ranges[i][2]
        return "other" if self.pipeline else "forward"

    def of(self, event) -> float:
        """The moment whose phase an event has: a kernel's launch, else its middle."""
        if _on_gpu(event) and event.correlation in self.launches:
            return self.launches[event.correlation]
        return (event.time_range.start + event.time_range.end) / 2


def _main_lane(parts, phases: _Phases, gap: float) -> list[tuple]:
    """The step split as the breakdown splits it: compute by phase, exposed communication, idle."""
    compute = union([s[:2] for s in parts.compute])
    comm = union([s[:2] for s in parts.comm])
    pieces: list[tuple[float, float, str, str]] = []
    kernels = sorted(((s, e) for s, _, e in parts.compute if _on_gpu(e)), key=lambda k: k[0])
    starts = [s for s, _ in kernels]
    for a, b in compute:
        if kernels:  # a GPU: each piece is named by the launch of the kernel that starts it
            first = kernels[min(bisect.bisect_left(starts, a), len(kernels) - 1)][1]
            pieces.append((a, b, COMPUTE_SPAN, phases.at(phases.of(first))))
            continue
        cuts = [a] + phases.cuts[bisect.bisect_right(phases.cuts, a):bisect.bisect_left(phases.cuts, b)] + [b]
        pieces += [(x, y, COMPUTE_SPAN, phases.at((x + y) / 2)) for x, y in zip(cuts, cuts[1:]) if y > x]
    rest = _gaps(compute, parts.lo, parts.hi)
    exposed = intersect(rest, comm)
    pieces += [(a, b, EXPOSED, "communication") for a, b in exposed]
    pieces += [(a, b, IDLE, "idle") for a, b in _subtract(rest, exposed)]
    return [(a, b, MAIN, kind, name, None) for a, b, kind, name, _ in _thin(sorted(p + (None,) for p in pieces), gap)]


def _comm_lane(parts, gap: float) -> list[tuple]:
    """Each collective as it ran (its wait for the last peer apart), with its bytes."""
    pieces = [(a, b, WAIT, _short(e.name), None) for a, b, e in parts.waits]
    pieces += [(a, b, COLLECTIVE, _short(e.name), getattr(e, "nbytes", None)) for a, b, e in parts.comm
               if not _on_gpu(e)]
    return [(a, b, COMM, kind, name, n) for a, b, kind, name, n in _thin(sorted(pieces), gap, fill=False)]


def _stream_lanes(parts, gap: float) -> list[list[tuple]]:
    """A GPU's kernels, a lane per stream (none on a CPU)."""
    by_stream: dict[str, list[tuple]] = {}
    for a, b, e in parts.compute + parts.comm:
        if _on_gpu(e):
            kind = COMPUTE_SPAN if classify(e, True, e.thread) == COMPUTE else COLLECTIVE
            by_stream.setdefault(f"stream {e.thread}", []).append((a, b, kind, _short(e.name) if kind == COLLECTIVE
                                                                    else "kernels", getattr(e, "nbytes", None)))
    return [[(a, b, lane, kind, name, n) for a, b, kind, name, n in _thin(sorted(p), gap, fill=False)]
            for lane, p in sorted(by_stream.items())]


def _thin(pieces: list[tuple], gap: float, fill: bool = True) -> list[tuple]:
    """Pieces (start, end, kind, name, bytes) in start order, thinned: one kind and name closer
    than ``gap`` become one (bytes summed); with ``fill`` (a lane that covers its step) a piece
    shorter than ``gap`` between two of one kind and name is drawn as part of them, so what the
    drawing loses of one kind it gains of another only in such slivers."""
    if fill:
        kept = [p for i, p in enumerate(pieces)  # a pipeline's actions stay, however short: they are the point
                if parse(p[3]) or not (0 < i < len(pieces) - 1 and p[1] - p[0] < gap
                                       and pieces[i - 1][2:4] == pieces[i + 1][2:4])]
        pieces = kept
    out: list[list[Any]] = []
    for a, b, kind, name, n in pieces:
        last = out[-1] if out else None
        if last and last[2] == kind and last[3] == name and a - last[1] <= gap:
            last[1] = max(last[1], b)
            last[4] = None if last[4] is None and n is None else (last[4] or 0) + (n or 0)
        else:
            out.append([a, b, kind, name, n])
    if fill:  # a covering lane stays covering: each span reaches the next one's start
        for this, after in zip(out, out[1:]):
            this[1] = after[0]
    return [tuple(p) for p in out]


def _short(name: str) -> str:
    """gloo:all_reduce -> all_reduce; an NCCL kernel by its collective."""
    if name.startswith("gloo:"):
        return name[len("gloo:"):]
    if "nccl" in name.lower():
        for op in ("AllReduce", "AllGather", "ReduceScatter", "Broadcast", "SendRecv", "AllToAll", "Reduce"):
            if op in name:
                return op
    return name


def _gaps(spans: list[tuple[float, float]], lo: float, hi: float) -> list[tuple[float, float]]:
    out, at = [], lo
    for a, b in spans:
        if a > at:
            out.append((at, a))
        at = max(at, b)
    if at < hi:
        out.append((at, hi))
    return out


def _subtract(a: list[tuple[float, float]], b: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """a minus b, both sorted and disjoint, b inside a."""
    out = []
    for lo, hi in a:
        inside = [(x, y) for x, y in b if x < hi and y > lo]
        out += _gaps(inside, lo, hi)
    return out
