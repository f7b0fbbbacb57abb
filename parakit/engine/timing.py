"""Step timing that does not add a host-device sync per step.

On a GPU each step is bracketed by CUDA events and the elapsed times are read once, at the
end. On a CPU the work is done when the Python call returns, so a wall clock is exact.
Each step has its own start and stop, so work between steps (the profiler saving a sampled
step, progress messages) is not counted in any step.
"""

from __future__ import annotations

import gc
import time

import torch


class StepTimer:
    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.spans: list[tuple] = []
        self._start = None

    def _now(self):
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def start(self) -> None:
        self._start = self._now()

    def stop(self) -> None:
        self.spans.append((self._start, self._now()))

    def step_times_s(self) -> list[float]:
        if self.cuda:
            torch.cuda.synchronize()  # note: the one host-device sync of the timing, at the end
            return [a.elapsed_time(b) / 1e3 for a, b in self.spans]
        return [b - a for a, b in self.spans]

    def since_start_s(self, steps: int | None = None) -> list[float]:
        """When each of the first ``steps`` steps (default all) ended, in seconds since the
        first one began: the wall clock a run's loss is drawn against, between-step work
        included. On a GPU read from the same events (their stream's clock), after a sync."""
        spans = self.spans[:steps] if steps is not None else self.spans
        if not spans:
            return []
        if self.cuda:
            return [spans[0][0].elapsed_time(b) / 1e3 for _, b in spans]
        return [b - spans[0][0] for _, b in spans]

    def completed_times_s(self, steps: int) -> list[float]:
        """After a failed step: the times of the first ``steps`` steps only, read without a
        device-wide sync (which a broken GPU context could not answer)."""
        spans = self.spans[:steps]
        if self.cuda:
            times = []
            for a, b in spans:
                try:
                    b.synchronize()  # note: waits for this event only
                    times.append(a.elapsed_time(b) / 1e3)
                except RuntimeError:
                    break
            return times
        return [b - a for a, b in spans]


class MeasuredWindow:
    """The wall clock and the energy of the measured steps, as one window: from the start of
    the first step after the warm-up to the end of the last step, with everything between the
    steps included (progress messages, the profiler's own work). Throughput from it is what the
    user waits for; energy over the same window makes per-sample figures comparable with it.

    ``cost_s`` is where the loop adds the time its instruments spent between steps.
    """

    def __init__(self, device: torch.device, meter):
        self.cuda = device.type == "cuda"
        self.meter = meter
        self.cost_s = 0.0
        self.messages = 0
        """Progress messages sent during the run (rank 0)."""
        self.gc_collections: list[int] | None = None
        """Cyclic-GC collections per generation during the window: work an instrument that
        makes garbage would add to the steps, counted."""
        self._start: float | None = None
        self._gc0: list[int] = []
        self.load = MachineLoad()
        """How busy the host was during the window: what others' processes could add to the steps."""

    def begin(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()  # note: one sync, at the warm-up's end: its work stays out
        self.meter.begin()
        self._gc0 = [g["collections"] for g in gc.get_stats()]
        self.load.begin()
        self._start = time.perf_counter()

    def end(self, failed: bool = False):
        """Returns (wall seconds, PowerMeasurement), or (None, None) when no measured step began.
        After a failed step the GPU is not waited for: a broken context could not answer."""
        if self._start is None:
            return None, None
        if self.cuda and not failed:
            torch.cuda.synchronize()  # note: the window ends when the GPU's work does
        wall_s = time.perf_counter() - self._start
        self.load.end(wall_s)
        self.gc_collections = [g["collections"] - c for g, c in zip(gc.get_stats(), self._gc0)]
        return wall_s, self.meter.end()


class MachineLoad:
    """The host's busy CPU time and this process's own over a window (psutil), so the summary
    can tell how much CPU other processes took from the run (records.machine_load). Two reads
    of /proc at the window's ends, ~0.1 ms each; nothing during the steps."""

    def __init__(self):
        self.measures: dict | None = None
        self._begin: tuple[float, float] | None = None

    @staticmethod
    def _read() -> tuple[float, float]:
        import psutil  # a dependency of ipyparallel's engines

        host = psutil.cpu_times()
        busy = sum(host) - host.idle - getattr(host, "iowait", 0.0)
        own = psutil.Process().cpu_times()  # every thread of this engine: gloo's, the profiler's
        return busy, own.user + own.system

    def begin(self) -> None:
        try:
            self._begin = self._read()
        except Exception:  # noqa: BLE001 - an unreadable counter leaves the figure None, the run goes on
            self._begin = None

    def end(self, window_s: float) -> None:
        if self._begin is None:
            return
        try:
            import socket

            import psutil

            busy, own = self._read()
            self.measures = {"host": socket.gethostname(), "cpus": psutil.cpu_count() or 1,
                            "busy_cpu_s": busy - self._begin[0], "own_cpu_s": own - self._begin[1],
                            "window_s": window_s}
        except Exception:  # noqa: BLE001
            self.measures = None
