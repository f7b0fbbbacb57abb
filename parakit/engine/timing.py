"""Step timing that does not add a host-device sync per step.

On a GPU each step is bracketed by CUDA events and the elapsed times are read once, at the
end. On a CPU the work is done when the Python call returns, so a wall clock is exact.
"""

from __future__ import annotations

import time

import torch


class StepTimer:
    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.marks: list = []

    def mark(self) -> None:
        """Call at the start of the first step and at the end of every step."""
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self.marks.append(event)
        else:
            self.marks.append(time.perf_counter())

    def step_times_s(self) -> list[float]:
        if self.cuda:
            torch.cuda.synchronize()  # note: the one host-device sync of the timing, at the end
            return [a.elapsed_time(b) / 1e3 for a, b in zip(self.marks, self.marks[1:])]
        return [b - a for a, b in zip(self.marks, self.marks[1:])]
