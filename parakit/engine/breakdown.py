"""Where a step's time goes: compute, communication, the part of communication not hidden
behind compute, and idle time, from the PyTorch profiler over sampled steps.

The method is Holistic Trace Analysis' temporal breakdown, on one step's trace:

- communication: the union of the intervals in which a collective runs, timed where it runs:
  gloo's worker threads (``gloo:all_reduce`` ...) and NCCL kernels on the GPU's stream, from
  the moment the last rank entered it (engine/peer_wait.py): the time before, a rank that came
  early spent waiting for a late one, and that is idle, not communication;
- compute: the union of compute kernels on a GPU; on a CPU, of the operators the training
  thread runs (aten ops, autograd's backward functions, the optimizer);
- exposed communication: communication time in which no compute runs;
- idle: the rest of the step, in which neither runs (waiting for a peer, inside a collective
  or out, a pipeline bubble, Python between operators).

``classify`` is the rule each event is read by; the breakdown's sums and the timeline's spans
(engine/step_spans.py) come from the same events through it.

So compute + exposed + idle is the step as the profiler saw it; ``check`` compares that with
the step time the timer measured, which is a separate clock.

Looking has a price, and the default keeps it small. The profiler slows the steps it records
(a few microseconds per operator), and starting, stopping and reading it costs milliseconds
outside them. Recording every 5th step, and reading each with ``prof.events()``, tripled a
small model's wall time on 2 CPU cores: ~50 ms per recorded step outside the timer; the
millions of Python objects that reading made slowed the following steps too, as the cyclic GC
worked through them, and a peer that finished reading first waited in the next step's
collective. So by default one short window is recorded, the last few steps of the run, with
one profiler session, and its raw events are read after the measured steps' clock stops.
``profile_every=N`` still records every Nth step for those who want the breakdown spread over
the run, and pay for it. Each run reports what its instruments cost (``instrument_overhead``).
"""

from __future__ import annotations

import bisect
import math
from typing import Any, NamedTuple

STEP_EVENT = "parakit.step"
STRAGGLER = "parakit.straggler"  # engine/straggler.py's added time, on a CPU a sleep
WINDOW_STEPS = 3  # the default: one window of this many consecutive steps, the run's last
# "AllToAll": expert parallelism's all-to-all (strategies/expert.py) runs its backward collective
# inside autograd's evaluate_function, which would otherwise count as compute on a CPU; so does
# context's "RingAttention" (strategies/ring.py) with its ring's waits (its matmuls inside still
# count, as aten ops of their own).
_COMM_MARKERS = ("gloo:", "nccl", "c10d::", "record_param_comms", "AllToAll", "RingAttention")
_CPU_COMPUTE = ("aten::", "autograd::engine::evaluate_function", "Optimizer.")


def recorded_steps(steps: int, warmup: int, every: int | None) -> list[int]:
    """The steps the profiler records: ``every=None`` one window of the last ``WINDOW_STEPS``
    measured steps, ``every=N`` every Nth step after the warm-up (each its own window), 0 none."""
    if every is None:
        return list(range(max(warmup, steps - WINDOW_STEPS), steps))
    return [s for s in range(warmup, steps) if every > 0 and (s - warmup) % every == 0]


class Span(NamedTuple):
    """One profiler event, as the breakdown reads it: microseconds on the profiler's clock."""

    name: str
    time_range: Any  # .start, .end (us)
    thread: int
    device_type: str | None
    nbytes: int | None = None
    """A collective's bytes, from the tensor shapes the profiler recorded; None for the rest."""
    correlation: int | None = None
    """A GPU kernel: the correlation id of the CPU launch it came from (phases on a GPU)."""


class _Range(NamedTuple):
    start: float
    end: float


ITEM_BYTES = {"float": 4, "double": 8, "c10::Half": 2, "c10::BFloat16": 2, "int": 4, "long int": 8,
              "signed char": 1, "unsigned char": 1, "bool": 1, "short int": 2}


def spans(kineto_results) -> list[Span]:
    """The raw events of a finished profile, read directly: building torch's FunctionEvent tree
    (``prof.events()``) took ~50 ms per recorded step of a small model and made millions of
    objects whose collection then slowed the next steps. Shapes are read for collectives only."""
    out = []
    for e in kineto_results.events():
        start, name = e.start_ns() / 1e3, e.name()
        comm = name.startswith(COMM_EVENTS) or "nccl" in name.lower()
        gpu = str(e.device_type()).endswith("CUDA")
        out.append(Span(name, _Range(start, start + e.duration_ns() / 1e3), e.start_thread_id(),
                        str(e.device_type()), _bytes(e.shapes(), e.dtypes()) if comm else None,
                        e.linked_correlation_id() if gpu else e.correlation_id()))
    return out


def _bytes(shapes, dtypes) -> int | None:
    total = 0
    for shape, dtype in zip(shapes, dtypes):
        if dtype in ITEM_BYTES and shape:
            total += math.prod(shape) * ITEM_BYTES[dtype]
    return total or None


COMPUTE, COMM = "compute", "comm"
COMM_EVENTS = ("gloo:",)


def classify(event, cuda: bool, thread: int) -> str | None:
    """The one rule of what an event counts as: ``COMM`` (a collective or point-to-point
    transfer, where it runs), ``COMPUTE`` (a GPU kernel; on a CPU an operator of the training
    ``thread``), or None (enqueueing a collective, another thread's work, markers). The breakdown
    and the timeline (engine/step_spans.py) both read events through it."""
    if event.name.startswith(COMM_EVENTS):  # gloo's worker threads, for the whole collective
        return COMM
    if cuda:
        return (COMM if "nccl" in event.name.lower() else COMPUTE) if _on_gpu(event) else None
    if event.thread == thread and event.name.startswith(_CPU_COMPUTE) and not any(m in event.name for m in _COMM_MARKERS):
        return COMPUTE
    if event.thread == thread and event.name == STRAGGLER:  # the straggler lever's delay: its compute
        return COMPUTE                                        # (config/straggler.py says why)
    return None


class StepParts(NamedTuple):
    """One step's classified events, each clipped to the step: (start, end, event) in us."""

    lo: float
    hi: float
    compute: list[tuple[float, float, Any]]
    comm: list[tuple[float, float, Any]]
    """Collectives from when every rank had entered them (``waits``): the time before is a wait."""
    waits: list[tuple[float, float, Any]]
    """The part of each collective before the last rank entered it (see engine/peer_wait.py)."""


def step_parts(events, cuda: bool, marker, waits: dict | None = None) -> StepParts:
    """``marker``'s step, its events classified by ``classify``; ``waits`` (event -> us) moves the
    start of a collective to when the last rank entered it: waiting for a late peer is not
    communication, it is idle time."""
    lo, hi = marker.time_range.start, marker.time_range.end
    compute, comm, waited = [], [], []
    for e in events:
        start, end = e.time_range.start, e.time_range.end
        if e is marker or e.name == STEP_EVENT or end <= lo or start >= hi:
            continue
        kind = classify(e, cuda, marker.thread)
        start, end = max(start, lo), min(end, hi)
        if kind == COMPUTE:
            compute.append((start, end, e))
        elif kind == COMM:
            wait = min(waits.get(e, 0.0), end - start) if waits else 0.0
            if wait > 0:
                waited.append((start, start + wait, e))
            if start + wait < end:
                comm.append((start + wait, end, e))
    return StepParts(lo, hi, compute, comm, waited)


def by_step(events, markers) -> list[list]:
    """``events`` split by the step (``markers``, in time order) they overlap, in one pass: each
    step's breakdown and spans then read its own events, not the whole window's."""
    starts = [m.time_range.start for m in markers]
    out: list[list] = [[] for _ in markers]
    for e in events:
        i = max(bisect.bisect_right(starts, e.time_range.start) - 1, 0)
        while i < len(markers) and markers[i].time_range.start < e.time_range.end:
            if markers[i].time_range.end > e.time_range.start:
                out[i].append(e)
            i += 1
    return out


def breakdown(events, cuda: bool, marker=None, waits: dict | None = None) -> dict[str, float]:
    """The temporal breakdown of one step, the ``marker`` event (by default the only
    ``parakit.step`` event among ``events``), in seconds; ``waits`` as ``step_parts``."""
    parts = step_parts(events, cuda, marker or next(e for e in events if e.name == STEP_EVENT), waits)
    comm, compute = union([s[:2] for s in parts.comm]), union([s[:2] for s in parts.compute])
    busy = union(comm + compute)
    step = parts.hi - parts.lo
    us = 1e-6
    return {
        "compute_time_s": length(compute) * us,
        "comm_time_s": length(comm) * us,
        "exposed_comm_time_s": (length(comm) - length(intersect(comm, compute))) * us,
        "idle_time_s": (step - length(busy)) * us,
        "peer_wait_time_s": length(union([s[:2] for s in parts.waits])) * us,
        "profiled_step_s": step * us,
    }


def _on_gpu(event) -> bool:
    kind = getattr(event, "device_type", None)
    return kind is not None and str(kind).endswith("CUDA")


def union(spans: list[tuple[float, float]]) -> list[tuple[float, float]]:
    out: list[list[float]] = []
    for a, b in sorted(spans):
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


def length(spans: list[tuple[float, float]]) -> float:
    return sum(b - a for a, b in spans)


def intersect(a: list[tuple[float, float]], b: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Overlap of two sorted, disjoint span lists."""
    i = j = 0
    out = []
    while i < len(a) and j < len(b):
        lo, hi = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if lo < hi:
            out.append((lo, hi))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return out
