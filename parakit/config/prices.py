"""What an hour of a device, a kWh and a kWh's CO2 cost: ``Prices``. Whatever is not given comes
from the price table shipped in the package (parakit/data/prices.json: approximate public list
prices, each with its source and date, meant to be checked and edited). Standard library only;
records/run_cost.py multiplies a run by them, the advisor a prediction.

Prices do not change the work, so they are no run setting (RunConfig): a session holds them,
a run may override them, and the record keeps the price it used, with its source, beside the
figure (``RunResult.cost_method``).
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, NamedTuple

from parakit.config.choices import is_number

PRICE_TABLE = "prices.json"  # in parakit/data/


class Quote(NamedTuple):
    """A price and where it comes from; where there is none, value is None and source says why."""

    value: float | None
    source: str


@functools.cache
def price_table() -> dict[str, Any]:
    """The shipped price table, read once."""
    return json.loads(resources.files("parakit.data").joinpath(PRICE_TABLE).read_text(encoding="utf-8"))


@dataclass(frozen=True, kw_only=True)
class Prices:
    """Prices to cost runs with; each left None is the shipped table's.

    Example:
        >>> parakit.Session(prices=parakit.Prices(gpu_hour_usd={"H100": 2.2}, kwh_usd=0.08))
    """

    device_hour_usd: float | None = None
    """One price per hour of every device a run holds, instead of the table's: a GPU, or on
    CPU engines a core (what your provider bills you, say)."""
    gpu_hour_usd: Mapping[str, float] = field(default_factory=dict)
    """USD per GPU-hour by kind, looked up before the table: {'H100': 2.2, 'A100 80GB': 1.4}. A
    kind matches a device whose name (as torch reports it) has each of its words."""
    cpu_core_hour_usd: float | None = None
    """USD per hour of one CPU core (a logical core: the engines' threads count them)."""
    kwh_usd: float | None = None
    """USD per kWh of electricity."""
    grid_g_per_kwh: float | None = None
    """Grams of CO2 per kWh of the grid the devices draw from."""

    def __post_init__(self) -> None:
        for name in ("device_hour_usd", "cpu_core_hour_usd", "kwh_usd", "grid_g_per_kwh"):
            _check_price(name, getattr(self, name))
        if not isinstance(self.gpu_hour_usd, Mapping):
            raise ValueError(f"gpu_hour_usd must be a dict of GPU kind to USD per hour, e.g. {{'H100': 2.2}} "
                             f"(got {self.gpu_hour_usd!r})")
        for kind, usd in self.gpu_hour_usd.items():
            if not isinstance(kind, str) or not _words(kind):
                raise ValueError(f"gpu_hour_usd's keys are GPU kinds such as 'H100' (got {kind!r})")
            _check_price(f"gpu_hour_usd[{kind!r}]", usd)
        # A copy: the caller changing their dict later does not change what runs were costed at.
        object.__setattr__(self, "gpu_hour_usd", dict(self.gpu_hour_usd))

    def device_hour(self, device_name: str, gpu: bool) -> Quote:
        """An hour of one device: a GPU by its kind (the name torch reports), or a CPU core."""
        if self.device_hour_usd is not None:
            return Quote(self.device_hour_usd, "given (device_hour_usd)")
        if not gpu:
            return self._quote("cpu_core_hour_usd")
        own = _kind_of(device_name, self.gpu_hour_usd)
        if own is not None:
            return Quote(self.gpu_hour_usd[own], f"given for {own}")
        table = price_table()["gpu_hour_usd"]
        kind = _kind_of(device_name, table)
        if kind is None:
            return Quote(None, f"the price table has no {device_name!r} GPU; give its price: "
                               f"Prices(gpu_hour_usd={{'<kind>': usd}}) or --price-device-hour")
        return Quote(table[kind]["value"], f"{kind}: {table[kind]['source']}")

    def kwh(self) -> Quote:
        return self._quote("kwh_usd")

    def grid(self) -> Quote:
        return self._quote("grid_g_per_kwh")

    def _quote(self, name: str) -> Quote:
        given = getattr(self, name)
        if given is not None:
            return Quote(given, "given")
        entry = price_table()[name]
        return Quote(entry["value"], entry["source"])


def check_prices(prices: Any) -> Prices:
    """``prices`` as a session or a run takes it: a Prices, or None for the table's."""
    if prices is None:
        return Prices()
    if not isinstance(prices, Prices):
        raise ValueError(f"prices must be parakit.Prices(...), e.g. Prices(kwh_usd=0.1) (got {type(prices).__name__})")
    return prices


def usd_text(usd: float) -> str:
    """Dollars with two significant digits however small: '$0.00012', '$0.35', '$12.40'."""
    if usd <= 0:
        return "$0"
    if usd < 1e-8:
        return "<$0.00000001"
    decimals = max(2, 1 - math.floor(math.log10(usd)))
    return f"${usd:,.{decimals}f}"


def _check_price(name: str, value: Any) -> None:
    if value is None:
        return
    if not is_number(value, low=0):
        raise ValueError(f"{name} must be a number >= 0, or None for the price table's (got {value!r})")


def _words(text: str) -> frozenset[str]:
    return frozenset(re.findall(r"[a-z0-9]+", text.lower()))


def _kind_of(device_name: str, kinds: Mapping[str, Any]) -> str | None:
    """The kind whose words are all words of the name, the most specific one ('A100 80GB' before
    'A100'); whole words, so 'L4' is not an 'L40S' nor 'A10' an 'A100'."""
    name = _words(device_name)
    matches = [k for k in kinds if _words(k) <= name]
    return max(matches, key=lambda k: len(_words(k)), default=None)
