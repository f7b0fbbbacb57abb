"""Where a step's time goes: compute, communication, the part of communication not hidden
behind compute, and idle time, from the PyTorch profiler over sampled steps.

The method is Holistic Trace Analysis' temporal breakdown, on one step's trace:

- communication: the union of the intervals in which a collective runs, timed where it runs:
  gloo's worker threads (``gloo:all_reduce`` ...) and NCCL kernels on the GPU's stream;
- compute: the union of compute kernels on a GPU; on a CPU, of the operators the training
  thread runs (aten ops, autograd's backward functions, the optimizer);
- exposed communication: communication time in which no compute runs;
- idle: the rest of the step, in which neither runs (waiting for a peer, a pipeline bubble,
  Python between operators).

So compute + exposed + idle is the step as the profiler saw it; ``check`` compares that with
the step time the timer measured, which is a separate clock. The profiler slows the steps it
records (a few microseconds per operator), which is why only every ``every``-th step after
the warm-up is recorded, and the run reports how much slower recorded steps were.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

STEP_EVENT = "parakit.step"
_COMM_MARKERS = ("gloo:", "nccl", "c10d::", "record_param_comms")
_CPU_COMPUTE = ("aten::", "autograd::engine::evaluate_function", "Optimizer.")


def is_profiled(step: int, warmup: int, every: int) -> bool:
    return every > 0 and step >= warmup and (step - warmup) % every == 0


class StepProfiler:
    """Records every ``every``-th step after ``warmup`` with torch.profiler and keeps each
    recorded step's breakdown; ``every == 0`` records none."""

    def __init__(self, device: torch.device, warmup: int, every: int):
        self.device, self.warmup, self.every = device, warmup, every
        self.breakdowns: dict[int, dict[str, float]] = {}

    def latest(self) -> dict[str, float] | None:
        """The newest recorded step's breakdown (for live progress), or None."""
        return self.breakdowns[max(self.breakdowns)] if self.breakdowns else None

    @contextlib.contextmanager
    def step(self, step: int) -> Iterator[None]:
        """Wrap one whole step, outside its timer, so starting and reading the profiler is not
        counted in the step's time."""
        if not is_profiled(step, self.warmup, self.every):
            yield
            return
        from torch.profiler import ProfilerActivity, profile, record_function

        cuda = self.device.type == "cuda"
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
        with profile(activities=activities) as prof:
            if cuda:
                torch.cuda.synchronize()  # note: sync on recorded steps only, so the step's kernels
            with record_function(STEP_EVENT):  # fall inside the recorded step's range
                yield
                if cuda:
                    torch.cuda.synchronize()
        self.breakdowns[step] = breakdown(prof.events(), cuda)


def breakdown(events, cuda: bool) -> dict[str, float]:
    """The temporal breakdown of the one ``parakit.step`` event among ``events``, in seconds."""
    marker = next(e for e in events if e.name == STEP_EVENT)
    lo, hi = marker.time_range.start, marker.time_range.end
    comm, compute = [], []
    for e in events:
        start, end = e.time_range.start, e.time_range.end
        if e is marker or end <= lo or start >= hi:
            continue
        span = (max(start, lo), min(end, hi))
        if e.name.startswith("gloo:"):  # gloo's worker threads, for the whole collective
            comm.append(span)
        elif cuda and _on_gpu(e):
            (comm if "nccl" in e.name.lower() else compute).append(span)
        elif not cuda and e.thread == marker.thread and e.name.startswith(_CPU_COMPUTE) \
                and not any(m in e.name for m in _COMM_MARKERS):
            compute.append(span)
    comm, compute = union(comm), union(compute)
    busy = union(comm + compute)
    step = hi - lo
    us = 1e-6
    return {
        "compute_time_s": length(compute) * us,
        "comm_time_s": length(comm) * us,
        "exposed_comm_time_s": (length(comm) - length(intersect(comm, compute))) * us,
        "idle_time_s": (step - length(busy)) * us,
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


def per_step(profiler: StepProfiler, steps: int) -> dict[str, Any]:
    """This rank's breakdown as lists over all steps (None on steps not recorded)."""
    keys = ("compute_time_s", "comm_time_s", "exposed_comm_time_s", "idle_time_s")
    if not profiler.breakdowns:
        return {}
    return {k: [profiler.breakdowns[s][k] if s in profiler.breakdowns else None for s in range(steps)]
            for k in keys}
