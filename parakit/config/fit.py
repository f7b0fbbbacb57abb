"""What a fit search asks, checked without torch: the setting to vary, the memory limit, and
the layouts to try, each a run that must make sense at the smallest value tried."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from parakit.config.bench import parse_size
from parakit.config.choices import check_int
from parakit.config.models import Workload
from parakit.config.run import RunConfig

VARY = ("depth", "width", "batch_size")
FIT_STEPS = 3  # one warm-up step, then two measured: the allocator and the optimizer state exist by then
MAX_TRIES = 12  # per layout: doubling, then bisection, stops here whatever it found


@dataclass(frozen=True)
class FitRequest:
    """A checked ``Session.fit`` request."""

    vary: str
    memory_limit: int
    """Bytes a rank may hold."""
    layouts: list[dict[str, Any]]
    """Run settings per layout tried (without the value of ``vary``)."""
    unit: int
    """Values of ``vary`` are multiples of this (gpt widths of its heads, batches of the
    data-parallel ranks), so every value tried is a valid run."""
    start: int
    high: int


def check_fit(model: Any, vary: str, memory_limit: Any, strategies: Any, workers: int,
              start: int | None, high: int | None, settings: dict[str, Any]) -> FitRequest:
    """The request, or a one-line ValueError naming the fix."""
    if vary not in VARY:
        raise ValueError(f"vary must be one of {', '.join(VARY)} (got {vary!r})")
    if vary != "batch_size" and model not in (Workload.MLP.value, Workload.GPT.value):
        raise ValueError(f"vary={vary} sizes the built-in mlp or gpt; with {getattr(model, '__name__', model)} "
                         "vary batch_size")
    limit = parse_size(memory_limit, "memory_limit")
    if isinstance(strategies, (str, dict)):
        strategies = [strategies]
    if not strategies:
        raise ValueError("strategies is empty; give at least one, e.g. ['ddp', 'fsdp']")
    check_int("workers", workers, 1)
    layouts = [dict(s) if isinstance(s, dict) else {"strategy": s} for s in strategies]
    for layout in layouts:
        if vary in layout or "workers" in layout:
            raise ValueError(f"a layout sets {vary} or workers; those are fit's own (layout {layout})")
    base = {k: v for k, v in settings.items() if k not in ("steps", "warmup_steps")}
    if vary in base.get("model_options", {}) or vary in base:
        raise ValueError(f"{vary} is what fit varies; leave it out of the settings")
    configs = [RunConfig(model=model, workers=1 if l.get("strategy") == "single" else workers,
                         **{**base, **l}) for l in layouts]
    unit = _unit(vary, configs)
    if start is None:
        start = _smallest(configs, vary, unit)
    check_int(f"the first {vary}", start, 1)
    if start % unit:
        raise ValueError(f"{vary} must be a multiple of {unit} here (got start={start})")
    high = high if high is not None else start * 2 ** (MAX_TRIES - 2)
    check_int(f"the largest {vary}", high, start)
    for config in configs:
        _at(config, vary, start)  # each layout must run at the first value tried
    return FitRequest(vary, limit, layouts, unit, start, high)


def _smallest(configs: list[RunConfig], vary: str, unit: int) -> int:
    """The smallest multiple of ``unit`` at which every layout runs (a pipeline needs a block
    per stage), found by trying; the last error if none up to 64 units does."""
    error = None
    for k in range(1, 65):
        try:
            for config in configs:
                _at(config, vary, k * unit)
            return k * unit
        except ValueError as e:
            error = e
    raise error


def _unit(vary: str, configs: list[RunConfig]) -> int:
    if vary == "batch_size":
        unit = 1
        for c in configs:
            unit = unit * c.data_parallel_size // _gcd(unit, c.data_parallel_size)
        return unit
    if vary == "width" and configs[0].model == "gpt":
        return configs[0].options["heads"]
    return 1


def _gcd(a: int, b: int) -> int:
    while b:
        a, b = b, a % b
    return a


def _at(config: RunConfig, vary: str, value: int) -> RunConfig:
    """``config`` with ``vary`` at ``value``, checked as a run."""
    import dataclasses

    if vary == "batch_size":
        return dataclasses.replace(config, batch_size=value)
    return dataclasses.replace(config, model_options={**config.model_options, vary: value})
