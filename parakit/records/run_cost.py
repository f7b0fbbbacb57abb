"""What a run cost: its devices' hours in dollars, its energy in dollars, and that energy's CO2.
THE cost rule: the session calls ``record_costs`` when a run ends, the advisor prices its
predictions with ``devices_held`` and ``device_hours_usd`` (so a prediction and the run that
verifies it count the same devices), and every front end shows the figures recorded here.

- ``cost_usd``: the whole run's wall clock (``started_at`` to ``ended_at``: start-up on the
  engines, warm-up and measured steps; what a device is held, and paid, for) x the devices
  it held (each GPU once; on CPU engines the cores its ranks computed on, their threads) x a
  price per device-hour. A failed run cost its wall clock too.
- ``energy_cost_usd``: the measured energy (``summary["energy_j"]``, over the measured steps:
  the meter's window) x a price per kWh.
- ``co2_g``: the same energy x the grid's grams of CO2 per kWh.

Where a figure cannot be had it is None, and ``unmeasured`` says why. Standard library only.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from datetime import datetime

from parakit.config.prices import Prices, Quote, usd_text
from parakit.records.result import RankInfo, RunResult

SECONDS_PER_HOUR = 3600.0
JOULES_PER_KWH = 3.6e6
FIGURES = ("cost_usd", "energy_cost_usd", "co2_g")


def device_hours_usd(seconds: float, usd_per_hour: float) -> float:
    """Dollars for holding devices ``seconds`` long, at ``usd_per_hour`` for all of them together."""
    return seconds / SECONDS_PER_HOUR * usd_per_hour


def record_costs(result: RunResult, prices: Prices) -> None:
    """Fill ``result``'s cost_usd, energy_cost_usd and co2_g, their methods (the prices used and
    where they come from) and, for those that are None, why. Costing again replaces them."""
    methods, missing = {}, {}
    result.cost_usd, how = _device_cost(result, prices)
    (methods if result.cost_usd is not None else missing)["cost_usd"] = how
    energy_j = result.summary.get("energy_j")
    if energy_j is None:
        why = result.unmeasured.get("energy_j") or ("the run has no measured steps" if not result.summary
                                                    else "energy was not measured")
        result.energy_cost_usd = result.co2_g = None
        missing["energy_cost_usd"] = missing["co2_g"] = f"no energy was measured: {why}"
    else:
        kwh, usd, grid = energy_j / JOULES_PER_KWH, prices.kwh(), prices.grid()
        measured = (f"energy_j {energy_j:.4g} J = {kwh:.4g} kWh (over the measured steps: the meter's "
                    "window, warm-up and start-up left out)")
        result.energy_cost_usd = kwh * usd.value
        methods["energy_cost_usd"] = f"{measured} x ${usd.value:g} per kWh ({usd.source})"
        result.co2_g = kwh * grid.value
        methods["co2_g"] = f"{measured} x {grid.value:g} g CO2 per kWh ({grid.source})"
    result.cost_method = methods
    for name in FIGURES:
        result.unmeasured.pop(name, None)
    result.unmeasured.update(missing)


def cost_text(result: RunResult) -> str:
    """The figures in a few words: '$0.00012 (energy $0.000004, 0.012 g CO2)', or '-'."""
    if result.cost_usd is None:
        return "-"
    text = usd_text(result.cost_usd)
    if result.energy_cost_usd is not None:
        text += f" (energy {usd_text(result.energy_cost_usd)}, {result.co2_g:.2g} g CO2)"
    return text


def cost_note(results: list[RunResult]) -> str | None:
    """Why a run has no cost, once for a set of runs (None when every one has one)."""
    reasons = sorted({r.unmeasured.get("cost_usd", "not costed (an older record)") for r in results
                      if r.cost_usd is None})
    return f"no cost: {'; '.join(reasons)}" if reasons else None


def run_wall_s(result: RunResult) -> float | None:
    """Seconds from the run's start to its end, as recorded; None where they were not."""
    try:
        started, ended = datetime.fromisoformat(result.started_at), datetime.fromisoformat(result.ended_at)
    except (TypeError, ValueError):
        return None
    return max((ended - started).total_seconds(), 0.0)


@dataclass(frozen=True)
class RankDevice:
    """What one rank computes on, as the cost rule counts it: a run's rank as recorded, or a
    predicted configuration's rank as the advisor places it."""

    device_name: str
    gpu: Hashable | None = None
    """The GPU it is pinned to, by any key that names one GPU (host and index): ranks with the
    same key share that GPU, which is counted once. None on CPU."""
    threads: int | None = None
    """CPU: the threads it computes with, each a core it holds; None where not recorded."""
    rank: int = 0


def devices_held(ranks: Iterable[RankDevice]) -> tuple[dict[tuple[str, bool], int], str | None]:
    """THE device count of the cost rule, for a run (``held_devices``) and for a prediction
    (advisor/pricing.py) alike, so the two are priced alike: {(device name, is a GPU): how
    many}, each GPU once (ranks sharing one count it once), and on CPU the cores the ranks
    compute on (their threads, summed: a run does not record its host's cores, so ranks that
    share cores count their threads each). A GPU's host cores are in its price, as cloud GPU
    instances include them. Or ({}, why not)."""
    gpus: dict[Hashable, str] = {}
    cores: Counter = Counter()
    for r in ranks:
        if r.gpu is not None:
            gpus.setdefault(r.gpu, r.device_name)
        elif r.threads is None:
            return {}, f"rank {r.rank}'s threads were not recorded, so the cores it held are unknown"
        else:
            cores[(r.device_name, False)] += r.threads
    found = {**Counter((name, True) for name in gpus.values()), **cores}
    return found, None if found else "the run recorded no ranks"


def held_devices(ranks: list[RankInfo]) -> tuple[dict[tuple[str, bool], int], str | None]:
    """What a run held, by ``devices_held``: each rank's GPU is its host's GPU index (the rank
    itself where none was recorded), and on CPU engines its threads."""
    return devices_held(RankDevice(r.device_name, _gpu_of(r), r.threads, r.rank) for r in ranks)


def _gpu_of(rank: RankInfo) -> Hashable | None:
    if not rank.device.startswith("cuda"):
        return None
    return rank.host, rank.gpu_index if rank.gpu_index is not None else f"rank {rank.rank}"


def _device_cost(result: RunResult, prices: Prices) -> tuple[float | None, str]:
    seconds = run_wall_s(result)
    if seconds is None:
        return None, "the run's start or end time was not recorded"
    devices, why = held_devices(result.ranks)
    if why:
        return None, why
    quotes = {key: prices.device_hour(key[0], gpu=key[1]) for key in devices}
    unpriced = next((q for q in quotes.values() if q.value is None), None)
    if unpriced is not None:
        return None, unpriced.source
    per_hour = sum(n * quotes[key].value for key, n in devices.items())
    held = " + ".join(_held_text(name, gpu, n, quotes[(name, gpu)]) for (name, gpu), n in devices.items())
    return device_hours_usd(seconds, per_hour), (
        f"{seconds:.3g} s, the whole run's wall clock (started_at to ended_at: start-up on the engines, "
        f"warm-up and measured steps, as the devices are held and paid for) x {held}")


def _held_text(name: str, gpu: bool, n: int, quote: Quote) -> str:
    what = f"{n} {name} GPU(s)" if gpu else f"{n} CPU core(s)"
    unit = "GPU-hour" if gpu else "core-hour"
    return f"{what} at ${quote.value:g} per {unit} ({quote.source})"
