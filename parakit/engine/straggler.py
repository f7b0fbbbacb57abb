"""The straggler lever on the engine (config/straggler.py says what it is for, and how it
slows a rank on a CPU and on a GPU): the named rank's forward and backward are wrapped so that
before each call it spends (factor - 1) x what the previous call computed.

What a call "computed" is its wall time on the rank itself (on a GPU between two
synchronisations, the straggler rank only). The straggler arrives last at each collective, so
it hardly waits: that time is its compute and its own share of communication. Not CPU time: on
a machine whose cores other processes share, a call's CPU time is a fraction of its wall time,
and the rank would be slowed less than asked. The first call has nothing to scale yet and runs
as it is (it is a warm-up step). The added time is marked ``parakit.straggler`` for the
profiler: the breakdown counts it as this rank's compute, the timeline names it.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from parakit.config.straggler import parse_straggler
from parakit.engine.breakdown import STRAGGLER

EVENT = STRAGGLER  # engine/step_spans.py draws it as the straggler's phase
_SIDE = 1024  # a 1024 x 1024 product on a GPU: microseconds, so the added time is met closely


class SlowerCompute:
    """Wraps a Parallel's ``forward_backward`` on the straggler rank (see the module's doc)."""

    def __init__(self, factor: float, device: torch.device):
        self.factor = factor
        self.cuda = device.type == "cuda"
        self.device = device
        self.last_compute_s = 0.0
        self.extra_s: list[float] = []
        """The extra seconds of arithmetic added before each call."""

    def _clock(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()  # note: the straggler rank only, so its call's time is its compute
        return time.perf_counter()

    def wrap(self, forward_backward):
        def slower(*args: Any, **kwargs: Any):
            self.extra_s.append(busy((self.factor - 1) * self.last_compute_s, self.device, self._clock))
            start = self._clock()
            out = forward_backward(*args, **kwargs)
            self.last_compute_s = self._clock() - start
            return out

        return slower


def busy(seconds: float, device: torch.device, clock=time.perf_counter) -> float:
    """The straggler's added time, ``seconds`` by ``clock``: real arithmetic on a GPU, a sleep on
    a CPU (config/straggler.py says why). Returns the seconds it took by ``clock``."""
    if seconds <= 0:
        return 0.0
    from torch.profiler import record_function

    start = clock()
    with record_function(EVENT), torch.no_grad():
        if device.type != "cuda":
            time.sleep(seconds)
            return seconds
        a = torch.full((_SIDE, _SIDE), 1.0 / _SIDE, device=device)
        while clock() - start < seconds:  # the GPU clock synchronises: the time is met closely
            a = a @ a  # stays 1/_SIDE everywhere: no overflow however long it runs
    return clock() - start


def apply_straggler(parallel, setting: str | None, rank: int, device: torch.device) -> bool:
    """Slow ``parallel``'s forward and backward down where ``setting`` names this ``rank``.

    Returns:
        Whether this rank is the straggler.
    """
    straggler = parse_straggler(setting)
    if straggler is None or straggler.rank != rank:
        return False
    parallel.forward_backward = SlowerCompute(straggler.factor, device).wrap(parallel.forward_backward)
    return True
