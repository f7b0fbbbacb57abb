"""What a predicted configuration costs: the devices it holds while it trains 1000 samples, at
a price per device-hour, by the run cost rule (records/run_cost.py): its devices are counted by
``devices_held``, as a run's are, and priced by ``device_hours_usd``, so a prediction and the
run that verifies it are priced alike. Energy is not predicted, so neither is its cost.
Standard library only."""

from __future__ import annotations

from dataclasses import replace

from parakit.advisor.costs import Estimate, rank_threads
from parakit.advisor.hardware import Hardware
from parakit.advisor.inputs import Calibration
from parakit.config.prices import Prices
from parakit.records.run_cost import RankDevice, device_hours_usd, devices_held

SAMPLES = 1000  # the cost is per this many samples: a figure that compares across batch sizes


def priced(estimates: list[Estimate], hw: Hardware, cal: Calibration, prices: Prices,
           gpus: int | None = None) -> tuple[list[Estimate], str]:
    """The estimates with ``cost_per_1k_samples_usd`` filled in where there is a price.

    Args:
        estimates: the cost model's estimates.
        hw: the hardware they are for.
        cal: the calibration (the threads a CPU rank computes with).
        prices: what a device-hour costs.
        gpus: the GPUs of the engines the prediction is for, which rank i shares as engine i
            does (GPU i % gpus); None: a GPU per rank (a preset).

    Returns:
        (the estimates, how the cost was predicted, or why it is None).
    """
    gpu = hw.device == "gpu"
    quote = prices.device_hour(hw.device_name, gpu=gpu)
    if quote.value is None:
        return estimates, f"no cost: {quote.source}"
    out = []
    for e in estimates:
        devices = predicted_devices(hw, cal, e.settings["workers"], gpus)
        cost = None
        if e.samples_per_s and devices is not None:
            cost = device_hours_usd(SAMPLES / e.samples_per_s, devices * quote.value)
        out.append(replace(e, cost_per_1k_samples_usd=cost))
    held = ("its GPUs (each once; ranks sharing one, as the engines do, hold it once)" if gpu
            else "the cores its ranks compute on (threads per rank x ranks)")
    unit = "GPU-hour" if gpu else "core-hour"
    return out, (f"predicted time for {SAMPLES} samples ({SAMPLES} / samples_per_s) x {held}, counted as "
                 f"a run's are (records/run_cost.py devices_held) x ${quote.value:g} per {unit} "
                 f"({quote.source}); no energy: it is not predicted")


def predicted_devices(hw: Hardware, cal: Calibration, workers: int, gpus: int | None = None) -> int | None:
    """The devices ``workers`` ranks hold on ``hw``, counted by the run cost rule: each rank
    placed as the engines would place it (a GPU each, or engine i's GPU i % ``gpus``; on CPU,
    the threads it would compute with). None where a rank's threads are unknown."""
    if hw.device == "gpu":
        ranks = [RankDevice(hw.device_name, gpu=i % gpus if gpus else i, rank=i) for i in range(workers)]
    else:
        threads = rank_threads(cal, hw, workers)
        ranks = [RankDevice(hw.device_name, threads=threads, rank=i) for i in range(workers)]
    held, why = devices_held(ranks)
    return None if why else sum(held.values())
