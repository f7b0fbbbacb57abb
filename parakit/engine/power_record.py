"""What a power meter reports: the measurement of one window (records.power.PowerMeasurement,
since the run record keeps it too), the names of its scopes and power sources, and the
exception a meter part raises for a figure it cannot measure here."""

from __future__ import annotations

import itertools

from parakit.records.power import PowerMeasurement, Sample

__all__ = ["POWER_INSTANT", "POWER_RAPL", "POWER_USAGE", "SAMPLE_HZ_RANGE", "SCOPE_GPU", "SCOPE_PACKAGE",
           "PowerMeasurement", "Sample", "Unmeasurable", "achieved_hz", "describe", "trapezoid_j"]

SCOPE_GPU = "gpu (this engine's GPU)"
SCOPE_PACKAGE = "package (whole CPU socket, shared by every process on it)"
POWER_INSTANT = "nvml_power_instant"
"""Power from the NVML field NVML_FI_DEV_POWER_INSTANT: the current draw."""
POWER_USAGE = "nvml_power_usage"
"""Power from nvmlDeviceGetPowerUsage: a 1-second average on Ampere and newer GPUs."""
POWER_RAPL = "rapl_energy_uj"
"""Power from the change of the RAPL package energy counters between two samples."""
SAMPLE_HZ_RANGE = (10.0, 1000.0)


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
