"""The profiler of a run's recorded steps: when it records (engine/breakdown.py's
``recorded_steps``), what each recorded step's breakdown is, the rank's timeline of its last
window (engine/step_spans.py), and what looking cost. The rule the events are read by is
breakdown.py's; the module doc there says why the default records one window at the run's end."""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import torch
from torch.autograd import profiler as _autograd_profiler  # here: profiler.step asks it every step

from parakit.config.layouts import Strategy
from parakit.engine import peer_wait
from parakit.engine.breakdown import STEP_EVENT, _on_gpu, breakdown, by_step, recorded_steps, spans
from parakit.engine.step_spans import rank_timeline
from parakit.records.rank_timeline import RankTimeline
from parakit.records.stragglers import find_stragglers


class StepProfiler:
    """Records the planned steps (``recorded_steps``) with torch.profiler, one profiler session
    per window of consecutive steps, and keeps each recorded step's breakdown.

    A window that ends at the run's last step stays open until ``finish()``, which the loop
    calls after the measured steps' clock has stopped: stopping the profiler and reading its
    events (~50 ms for a small model's 3 steps on a CPU) then costs the run's end, not its
    steps. A window in the middle (``profile_every=N``) is read when it closes, so a live view
    can draw it; that cost falls between steps and is counted.

    Tensor shapes are recorded (``record_shapes``) so each collective's bytes are known; that
    costs the recorded steps ~1 us per operator, inside ``recorded_step_slowdown``.

    ``cost_s`` is the time spent starting, stopping and reading the profiler between steps
    (what ``finish()`` spends after the last step is not in it); ``enabled_steps`` the steps
    during which the profiler was on, checked at each step's start. Under a ``strategy`` whose
    collectives are in one group of every rank, each rank's waits in them for a late peer are
    told apart (engine/peer_wait.py).
    """

    def __init__(self, device: torch.device, warmup: int, every: int | None, steps: int, *,
                 world: int = 1, trace: bool = False, rank: int = 0, strategy: Strategy | None = None):
        self.device, self.cuda = device, device.type == "cuda"
        self.world, self.rank = world, rank
        self.match_peers = world > 1 and peer_wait.matches_peers(strategy)
        self.steps = steps
        self.plan = set(recorded_steps(steps, warmup, every))
        self.trace = trace
        self.breakdowns: dict[int, dict[str, float]] = {}
        self.traces: list[tuple[list[int], str]] = []
        """(steps, Chrome-trace JSON text) per window, when ``trace``."""
        self.timeline: RankTimeline | None = None
        """The last window's spans (engine/step_spans.py)."""
        self.rank_compute: dict[int, list[float]] = {}
        """Recorded step -> every rank's compute in it, as exchanged when its window was read."""
        self.cost_s = 0.0
        self.enabled_steps: list[int] = []
        self._prof = None
        self._window: list[int] = []

    def latest(self) -> dict[str, float] | None:
        """The newest recorded step's breakdown (for live progress), or None."""
        return self.breakdowns[max(self.breakdowns)] if self.breakdowns else None

    def stragglers(self) -> list[int] | None:
        """The ranks named stragglers so far (records/stragglers.py's rule, on the windows read
        so far: every rank's compute, exchanged), for live progress; None until it can tell."""
        if not self.match_peers or len(self.rank_compute) < 2:
            return None
        compute = [self.rank_compute[s] for s in sorted(self.rank_compute)]
        return find_stragglers(compute) if all(c > 0 for step in compute for c in step) else None

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
            # Every rank exchanges its collectives' entries here (peer_wait), which also keeps
            # ranks that read their windows at different speeds together: without it the first
            # to finish would wait in the next step's collective and that step would carry the cost.
            self._close(together=self.world > 1)
            self.cost_s += time.perf_counter() - started

    def finish(self, failed: bool = False) -> None:
        """After the last step (and after the measured steps' clock): read an open window. A
        window that cannot be read (a failed GPU step broke the context) is dropped: the
        steps the run made matter more than their breakdown. After a failure no rank waits for
        the others' entries (a peer may be gone): the waits are not told apart then."""
        if self._prof is not None:
            try:
                self._close(together=self.world > 1 and not failed)
            except Exception:  # noqa: BLE001 - see above
                self._prof, self._window = None, []

    def _open(self) -> None:
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if self.cuda else [])
        self._prof = profile(activities=activities, record_shapes=True)
        self._prof.__enter__()

    def _close(self, together: bool) -> None:
        prof, self._prof = self._prof, None
        prof.__exit__(None, None, None)
        events = spans(prof.profiler.kineto_results)
        markers = sorted((e for e in events if e.name == STEP_EVENT and not _on_gpu(e)),
                         key=lambda e: e.time_range.start)
        steps = by_step(events, markers)
        mine = peer_wait.entries(events, markers, self.cuda) if self.match_peers else [[] for _ in markers]
        for step, marker, own in zip(self._window, markers, steps):
            self.breakdowns[step] = breakdown(own, self.cuda, marker)
        waited = {}
        if together:
            gathered = peer_wait.exchange(mine, [self.breakdowns[s]["compute_time_s"] for s in self._window])
            waited = peer_wait.waits(mine, [entries for entries, _ in gathered])
            for i, step in enumerate(self._window):
                self.rank_compute[step] = [compute[i] if i < len(compute) else 0.0 for _, compute in gathered]
        if waited:  # the waits move time from communication to idle: read the steps again with them
            for step, marker, own in zip(self._window, markers, steps):
                self.breakdowns[step] = breakdown(own, self.cuda, marker, waited)
        if max(self._window) == max(self.plan):  # the last window is the one drawn
            started = time.perf_counter()
            timeline = rank_timeline(steps, markers[:len(self._window)], self._window, self.cuda, waited, self.rank)
            self.timeline = replace(timeline, export_s=time.perf_counter() - started)
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


BREAKDOWN_KEYS = ("compute_time_s", "comm_time_s", "exposed_comm_time_s", "idle_time_s")


def per_step(profiler: StepProfiler, steps: int, stats: dict[str, Any] | None = None) -> dict[str, Any]:
    """This rank's breakdown as lists over all steps (None on steps not recorded), and its
    timeline, with a pipeline's planned order of actions (``stats``: the Parallel's) on it."""
    if not profiler.breakdowns:
        return {}
    out: dict[str, Any] = {k: [profiler.breakdowns[s][k] if s in profiler.breakdowns else None for s in range(steps)]
                           for k in BREAKDOWN_KEYS}
    if profiler.timeline is not None:
        out["timeline"] = replace(profiler.timeline, planned=(stats or {}).get("planned_order"))
    return out
