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

import contextlib
import os
import tempfile
import time
from collections.abc import Iterator
from typing import Any, NamedTuple

import torch
from torch.autograd import profiler as _autograd_profiler  # here: profiler.step asks it every step

STEP_EVENT = "parakit.step"
WINDOW_STEPS = 3  # the default: one window of this many consecutive steps, the run's last
_COMM_MARKERS = ("gloo:", "nccl", "c10d::", "record_param_comms")
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


class _Range(NamedTuple):
    start: float
    end: float


def spans(kineto_results) -> list[Span]:
    """The raw events of a finished profile, read directly: building torch's FunctionEvent tree
    (``prof.events()``) took ~50 ms per recorded step of a small model and made millions of
    objects whose collection then slowed the next steps."""
    out = []
    for e in kineto_results.events():
        start = e.start_ns() / 1e3
        out.append(Span(e.name(), _Range(start, start + e.duration_ns() / 1e3), e.start_thread_id(),
                        str(e.device_type())))
    return out


class StepProfiler:
    """Records the planned steps (``recorded_steps``) with torch.profiler, one profiler session
    per window of consecutive steps, and keeps each recorded step's breakdown.

    A window that ends at the run's last step stays open until ``finish()``, which the loop
    calls after the measured steps' clock has stopped: stopping the profiler and reading its
    events (~50 ms for a small model's 3 steps on a CPU) then costs the run's end, not its
    steps. A window in the middle (``profile_every=N``) is read when it closes, so a live view
    can draw it; that cost falls between steps and is counted.

    ``cost_s`` is the time spent starting, stopping and reading the profiler between steps
    (what ``finish()`` spends after the last step is not in it); ``enabled_steps`` the steps
    during which the profiler was on, checked at each step's start.
    """

    def __init__(self, device: torch.device, warmup: int, every: int | None, steps: int, *,
                 world: int = 1, trace: bool = False):
        self.device, self.cuda = device, device.type == "cuda"
        self.world = world
        self.steps = steps
        self.plan = set(recorded_steps(steps, warmup, every))
        self.trace = trace
        self.breakdowns: dict[int, dict[str, float]] = {}
        self.traces: list[tuple[list[int], str]] = []
        """(steps, Chrome-trace JSON text) per window, when ``trace``."""
        self.cost_s = 0.0
        self.enabled_steps: list[int] = []
        self._prof = None
        self._window: list[int] = []

    def latest(self) -> dict[str, float] | None:
        """The newest recorded step's breakdown (for live progress), or None."""
        return self.breakdowns[max(self.breakdowns)] if self.breakdowns else None

    @contextlib.contextmanager
    def step(self, step: int) -> Iterator[None]:
        """Wrap one whole step, outside its timer, so starting and reading the profiler is not
        counted in the step's time."""
        if step not in self.plan:
            if _profiler_on():
                self.enabled_steps.append(step)
            yield
            return
        from torch.profiler import record_function

        if self._prof is None:
            started = time.perf_counter()
            self._open()
            self.cost_s += time.perf_counter() - started
        self._window.append(step)
        self.enabled_steps.append(step)
        if self.cuda:
            torch.cuda.synchronize()  # note: sync on recorded steps only, so the step's kernels
        with record_function(STEP_EVENT):  # fall inside the recorded step's range
            yield
            if self.cuda:
                torch.cuda.synchronize()
        if step + 1 not in self.plan and step + 1 < self.steps:
            started = time.perf_counter()
            self._close()
            if self.world > 1:
                # Ranks read their windows at different speeds; without this the first to finish
                # would wait in the next step's collective and that step would carry the cost.
                import torch.distributed as dist

                dist.barrier()
            self.cost_s += time.perf_counter() - started

    def finish(self) -> None:
        """After the last step (and after the measured steps' clock): read an open window. A
        window that cannot be read (a failed GPU step broke the context) is dropped: the
        steps the run made matter more than their breakdown."""
        if self._prof is not None:
            try:
                self._close()
            except Exception:  # noqa: BLE001 - see above
                self._prof, self._window = None, []

    def _open(self) -> None:
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if self.cuda else [])
        self._prof = profile(activities=activities)
        self._prof.__enter__()

    def _close(self) -> None:
        prof, self._prof = self._prof, None
        prof.__exit__(None, None, None)
        events = spans(prof.profiler.kineto_results)
        markers = sorted((e for e in events if e.name == STEP_EVENT and not _on_gpu(e)),
                         key=lambda e: e.time_range.start)
        for step, marker in zip(self._window, markers):
            self.breakdowns[step] = breakdown(events, self.cuda, marker)
        if self.trace:
            self.traces.append((list(self._window), _chrome_trace(prof)))
        self._window = []


def _profiler_on() -> bool:
    return _autograd_profiler._is_profiler_enabled  # torch's own flag, set while any profiler records


def _chrome_trace(prof) -> str:
    """The window as Chrome-trace JSON (Perfetto, chrome://tracing, Holistic Trace Analysis):
    torch writes the process group's rank, world size and backend into its distributedInfo."""
    with tempfile.TemporaryDirectory(prefix="parakit-trace-") as folder:
        path = os.path.join(folder, "trace.json")
        prof.export_chrome_trace(path)
        with open(path) as f:
            return f.read()


def breakdown(events, cuda: bool, marker=None) -> dict[str, float]:
    """The temporal breakdown of one step, the ``marker`` event (by default the only
    ``parakit.step`` event among ``events``), in seconds."""
    marker = marker or next(e for e in events if e.name == STEP_EVENT)
    lo, hi = marker.time_range.start, marker.time_range.end
    comm, compute = [], []
    for e in events:
        start, end = e.time_range.start, e.time_range.end
        if e is marker or e.name == STEP_EVENT or end <= lo or start >= hi:
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
