"""What a predicted configuration costs: the devices it holds while it trains 1000 samples, at
a price per device-hour, by the run cost rule (records/run_cost.py ``device_hours_usd``), so
a prediction and the run that verifies it are priced alike. Energy is not predicted, so
neither is its cost. Standard library only."""

from __future__ import annotations

from dataclasses import replace

from parakit.advisor.costs import Estimate, rank_threads
from parakit.advisor.hardware import Hardware
from parakit.advisor.inputs import Calibration
from parakit.config.prices import Prices
from parakit.records.run_cost import device_hours_usd

SAMPLES = 1000  # the cost is per this many samples: a figure that compares across batch sizes


def priced(estimates: list[Estimate], hw: Hardware, cal: Calibration,
           prices: Prices) -> tuple[list[Estimate], str]:
    """The estimates with ``cost_per_1k_samples_usd`` filled in where there is a price.

    Returns:
        (the estimates, how the cost was predicted, or why it is None).
    """
    gpu = hw.device == "gpu"
    quote = prices.device_hour(hw.device_name, gpu=gpu)
    if quote.value is None:
        return estimates, f"no cost: {quote.source}"
    out = []
    for e in estimates:
        devices = e.settings["workers"] if gpu else _cores(hw, cal, e.settings["workers"])
        cost = None
        if e.samples_per_s and devices is not None:
            cost = device_hours_usd(SAMPLES / e.samples_per_s, devices * quote.value)
        out.append(replace(e, cost_per_1k_samples_usd=cost))
    held = "a GPU per worker" if gpu else "the cores its ranks compute on (threads per rank x ranks)"
    unit = "GPU-hour" if gpu else "core-hour"
    return out, (f"predicted time for {SAMPLES} samples ({SAMPLES} / samples_per_s) x {held} x "
                 f"${quote.value:g} per {unit} ({quote.source}); no energy: it is not predicted")


def _cores(hw: Hardware, cal: Calibration, workers: int) -> int | None:
    """CPU cores a configuration holds; on the engines' own machine never more than it has."""
    threads = rank_threads(cal, hw, workers)
    if threads is None:
        return None
    return min(workers * threads, hw.cores) if hw.calibrated and hw.cores else workers * threads
