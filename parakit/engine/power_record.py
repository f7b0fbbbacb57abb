"""What a power meter reports: the measurement of one window, the names of its scopes and power
sources, and the exception a meter part raises for a figure it cannot measure here."""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field

SCOPE_GPU = "gpu (this engine's GPU)"
SCOPE_PACKAGE = "package (whole CPU socket, shared by every process on it)"
POWER_INSTANT = "nvml_power_instant"
"""Power from the NVML field NVML_FI_DEV_POWER_INSTANT: the current draw."""
POWER_USAGE = "nvml_power_usage"
"""Power from nvmlDeviceGetPowerUsage: a 1-second average on Ampere and newer GPUs."""
POWER_RAPL = "rapl_energy_uj"
"""Power from the change of the RAPL package energy counters between two samples."""
SAMPLE_HZ_RANGE = (10.0, 1000.0)

Sample = tuple[float, float, float | None, int | None]
"""(t_s since begin, watts, GPU utilisation percent or None, memory used bytes or None)."""


@dataclass(frozen=True, kw_only=True)
class PowerMeasurement:
    """What a PowerMeter saw between begin() and end()."""

    energy_j: float | None
    """From the device's energy counter (end minus begin); None when it has none, see reason."""
    avg_power_w: float | None
    """energy_j / duration_s; None when energy_j is None."""
    duration_s: float
    """Wall time from begin() to end()."""
    samples: list[Sample] = field(default_factory=list)
    """(t_s since begin, watts, util_percent or None, mem_bytes or None), in time order."""
    sample_hz_achieved: float | None = None
    """Samples per second between the first and the last sample; None with fewer than two."""
    power_source: str | None = None
    """Where sample watts come from: POWER_INSTANT, POWER_USAGE or POWER_RAPL; None if no samples."""
    scope: str
    """What is measured: SCOPE_GPU, or SCOPE_PACKAGE (shared by every process on the socket)."""
    reason: str | None = None
    """Why a figure is None, or sampling stopped early; None when everything was measured."""
    overhead_s: float = 0.0
    """CPU time the sampler thread spent (time.thread_time in the thread)."""
    sampled_energy_j: float | None = None
    """Trapezoid integral of the samples: a cross-check, not the energy (that is energy_j)."""

    def to_dict(self) -> dict:
        """Plain JSON-able data: samples become lists."""
        d = asdict(self)
        d["samples"] = [list(s) for s in self.samples]
        return d


class Unmeasurable(Exception):
    """A figure cannot be measured here; the message is the reason shown to the user."""


def describe(e: BaseException) -> str:
    """An error as a reason names it: its type and its message."""
    return f"{type(e).__name__}: {e}"


def achieved_hz(samples: list[Sample]) -> float | None:
    """Samples per second from the first sample to the last; None with fewer than two."""
    if len(samples) < 2 or samples[-1][0] <= samples[0][0]:
        return None
    return (len(samples) - 1) / (samples[-1][0] - samples[0][0])


def trapezoid_j(samples: list[Sample]) -> float | None:
    """Joules under the samples' power curve; None with fewer than two samples."""
    if len(samples) < 2:
        return None
    return sum((b[0] - a[0]) * (a[1] + b[1]) / 2 for a, b in itertools.pairwise(samples))
