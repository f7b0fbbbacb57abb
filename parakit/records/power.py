"""What a power meter saw over one window: ``PowerMeasurement``. The engine's meter
(engine/power.py) makes it, a rank's report carries it back, and the run record keeps it per
rank (``RankInfo.power``), so it lives here, where both sides may import it."""

from __future__ import annotations

from dataclasses import dataclass, field

from parakit.records.record_view import RecordView

Sample = tuple[float, float, float | None, int | None]
"""(t_s since begin, watts, GPU utilisation percent or None, memory used bytes or None)."""


@dataclass(frozen=True, kw_only=True, eq=False)
class PowerMeasurement(RecordView):
    """What a PowerMeter saw between begin() and end(). Read it by attribute.

    It is also a read-only Mapping of its fields (``m["energy_j"]``, ``{**m}``; RecordView) for
    the readers still written for the dict it used to travel as (records/summary.py,
    records/segments.py, plots/measures.py), and ``to_dict`` / ``from_dict`` are its JSON.
    """

    READERS = {"samples": lambda samples: [tuple(s) for s in samples]}  # JSON has no tuples

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
    """Where sample watts come from (engine.power_record's POWER_INSTANT, POWER_USAGE or
    POWER_RAPL); None if no samples."""
    scope: str
    """What is measured: this engine's GPU, or a whole CPU package (shared by every process on
    the socket): engine.power_record's SCOPE_GPU or SCOPE_PACKAGE."""
    reason: str | None = None
    """Why a figure is None, or sampling stopped early; None when everything was measured."""
    overhead_s: float = 0.0
    """CPU time the sampler thread spent (time.thread_time in the thread)."""
    sampled_energy_j: float | None = None
    """Trapezoid integral of the samples: a cross-check, not the energy (that is energy_j)."""
