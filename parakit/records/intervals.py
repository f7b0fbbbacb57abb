"""THE interval rule: how sure a measured step time, throughput or ratio of them is, and the
words that go with a comparison ("faster", "slower", "no measurable difference"). The run's
summary, the runs frame's speed-up and efficiencies, ``parakit.compare``, the speed-up table,
the figures' error bars, the panel, the demo and ``records.explain`` all take their intervals
and verdicts from here.

The method (docs/measuring.md says why):

- Every figure is handled on the log scale, where a ratio's noise is a sum of its parts' noise.
- **Within one run**: a moving-block bootstrap of the median over the measured steps. Step
  times are autocorrelated (the other core's load, the allocator, a profiler window come in
  stretches), so steps are resampled in blocks of about n^(1/3) consecutive steps, not one by
  one. It gives the within-run standard deviation of the log median, ``within_run_sd``.
- **Between runs**: a fresh process, its memory layout and the machine's other load move a
  whole run, and that spread is larger than the within-run one. One run cannot see it, so it
  is the measured spread of repeated identical runs, ``RUN_TO_RUN_SD`` (benchmarks/
  interval_coverage.py measures it and checks the interval's coverage), or, with 3 or more
  repeats of a configuration, their own spread where it is larger.
- A configuration's figure is the median of its repeats (on the log scale, so two repeats give
  their geometric mean); its log standard error is sqrt(mean within_run_sd^2 / r + between^2
  / r) for r repeats (alternated, ABAB, so drift does not fall on one side), times 1.25 from 3
  repeats on (a median's error over a mean's). The 95 % interval is exp(+-1.96 standard errors).
- A ratio's standard error is the two sides' in quadrature; the verdict is "faster" or
  "slower" when its interval leaves 1 out, else "no measurable difference".

Standard library only (the runs frame applies it with pandas).
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

LEVEL = 0.95
Z = 1.959964  # the normal quantile of a two-sided 95 % interval
RUN_TO_RUN_SD = 0.10
"""Standard deviation of log(median step time) between fresh identical runs, beyond what each
run's own steps show: measured on 2 CPU cores by benchmarks/interval_coverage.py
(docs/benchmarks.md). The floor of the between-run term: a configuration with 3 or more
repeats uses its own spread where that is larger."""
RESAMPLES = 1000
BOOTSTRAP_WORK = 50_000
"""At most this many resampled steps per bootstrap (pure Python): a run stopped after thousands
of steps takes 100 resamples, ~0.05 s, not 1000 (0.8 s at 5000 steps, paid at every summary)."""
FASTER, SLOWER, SAME = "faster", "slower", "no measurable difference"
METHOD = ("95 % interval: moving-block bootstrap of the median over the measured steps (within the run), "
          f"with a run-to-run spread of {RUN_TO_RUN_SD:.0%} (log sd, measured between fresh identical runs) "
          "added in quadrature; with repeats, their median and their own spread (records/intervals.py)")


@dataclass(frozen=True)
class Estimate:
    """A measured figure (a throughput, a step time) with its noise on the log scale."""

    value: float
    """The figure: one run's median-step figure, or the median of a configuration's repeats."""
    log_sd: float
    """Standard error of log(value): within-run and run-to-run noise together."""
    repeats: int = 1
    """How many runs the figure comes from."""

    @property
    def low(self) -> float:
        return self.value * math.exp(-Z * self.log_sd)

    @property
    def high(self) -> float:
        return self.value * math.exp(Z * self.log_sd)


@dataclass(frozen=True)
class Comparison:
    """``a`` against ``b``: the ratio of their throughputs with its 95 % interval and the
    verdict in words. ``ratio > 1`` means ``a`` does more samples a second."""

    ratio: float
    low: float
    high: float
    verdict: str
    """"faster" or "slower" (``a`` against ``b``) when the interval leaves 1 out, else
    "no measurable difference"."""
    repeats: tuple[int, int] = (1, 1)
    """How many runs each side's figure comes from."""
    method: str = METHOD

    def __str__(self) -> str:
        return f"{self.verdict}: {self.ratio:.2f}x ({self.low:.2f}-{self.high:.2f})"


def verdict(low: float, high: float) -> str:
    """The words for a ratio's interval: faster above 1, slower below, else no difference."""
    if low > 1:
        return FASTER
    if high < 1:
        return SLOWER
    return SAME


def within_run_sd(step_times_s: Sequence[float], resamples: int = RESAMPLES) -> float:
    """Standard deviation of log(median step time) from a moving-block bootstrap over the
    measured steps (blocks of ~n^(1/3) consecutive steps keep their autocorrelation).
    Seeded: the same steps always give the same figure. 0 for fewer than 2 steps."""
    times = [t for t in step_times_s if t > 0]
    n = len(times)
    if n < 2:
        return 0.0
    block = max(1, round(n ** (1 / 3)))
    starts = range(n - block + 1)
    rng = random.Random(n)
    logs = []
    for _ in range(min(resamples, max(100, BOOTSTRAP_WORK // n))):
        sample: list[float] = []
        while len(sample) < n:
            i = rng.choice(starts)
            sample += times[i:i + block]
        logs.append(math.log(statistics.median(sample[:n])))
    return statistics.pstdev(logs)


def run_estimate(value: float, within_sd: float | None) -> Estimate:
    """One run's figure with its within-run noise and the run-to-run spread."""
    return combine([value], [within_sd])


def combine(values: Sequence[float], within_sds: Sequence[float | None]) -> Estimate:
    """One configuration's figure from its repeats (one or more runs of the same settings).

    Args:
        values: each run's figure (samples_per_s or step_time_s), all > 0.
        within_sds: each run's ``within_run_sd`` (None for a record from before it existed: 0).

    Returns:
        Their median on the log scale, with the standard error of its log (module docstring).
    """
    r = len(values)
    logs = [math.log(v) for v in values]
    within = sum((w or 0.0) ** 2 for w in within_sds) / r
    between = RUN_TO_RUN_SD
    if r >= 3:
        between = max(between, statistics.stdev(logs))
    median_factor = math.sqrt(math.pi / 2) if r >= 3 else 1.0  # a median's standard error over a mean's
    return Estimate(math.exp(statistics.median(logs)), median_factor * math.sqrt((within + between ** 2) / r), r)


def ratio(a: Estimate, b: Estimate) -> Comparison:
    """``a.value / b.value`` with its interval and verdict (the two measured independently)."""
    value = a.value / b.value
    sd = math.hypot(a.log_sd, b.log_sd)
    low, high = value * math.exp(-Z * sd), value * math.exp(Z * sd)
    return Comparison(value, low, high, verdict(low, high), (a.repeats, b.repeats))


def interval_text(value: float, low: float, high: float, unit: str = "x") -> str:
    """'1.54x (1.47-1.61)': a figure with its interval, as every front end shows it."""
    digits = 2 if unit == "x" else 1
    return f"{value:.{digits}f}{unit} ({low:.{digits}f}-{high:.{digits}f})"


def speedup_text(workers: int, speedup: float, low: float, high: float, against: int = 1) -> str:
    """The speed-up in words: '2 workers: 1.54x (1.47-1.61)', or '2 workers: no measurable
    difference from 1 (0.93-1.08)' where the interval holds 1."""
    who = f"{workers} worker{'s' if workers != 1 else ''}"
    if verdict(low, high) == SAME:
        return f"{who}: {SAME} from {against} ({low:.2f}-{high:.2f})"
    return f"{who}: {interval_text(speedup, low, high)}"


def still_settling(step_times_s: Sequence[float]) -> str | None:
    """A one-line warning when the measured steps have not reached steady state: the first
    half's median is slower than the second half's beyond both halves' noise. None when
    steady, or with fewer than 8 measured steps to tell."""
    n = len(step_times_s)
    if n < 8:
        return None
    first, second = step_times_s[: n // 2], step_times_s[n - n // 2:]
    gap = math.log(statistics.median(first) / statistics.median(second))
    noise = math.hypot(within_run_sd(first), within_run_sd(second))
    # Beyond both halves' noise and by more than 10 %: with 4 steps a half the bootstrap alone
    # is too sure of itself, and a smaller drift moves no figure a notebook compares.
    if gap <= max(Z * noise, math.log(1.1)):
        return None
    return (f"step times still falling: the second half of the measured steps was {1 - math.exp(-gap):.0%} "
            "faster than the first; run more steps or more warm-up (warmup_steps)")


def compare(a, b) -> Comparison:
    """How much faster ``a`` trains than ``b``, with its 95 % interval and a verdict.

    Example:
        >>> one = s.run(model="gpt", workers=1); two = s.run(model="gpt", workers=2)
        >>> print(parakit.compare(two, one))
        faster: 1.54x (1.31-1.81)

    Args:
        a: a RunResult, or a list of them: repeats of one configuration.
        b: the same, to compare against.

    Returns:
        A Comparison: ``ratio`` of samples_per_s (a over b), ``low`` / ``high`` and ``verdict``
        ("faster", "slower" or "no measurable difference", said of ``a``).

    Raises:
        ValueError: a side is empty or holds a run with no measured throughput (failed, or
            from before any step was measured).
    """
    return ratio(_side(a, "a"), _side(b, "b"))


def _side(runs, name: str) -> Estimate:
    runs = list(runs) if isinstance(runs, (list, tuple)) else [runs]
    if not runs:
        raise ValueError(f"compare: {name} holds no run; give a RunResult or a list of repeats")
    values, noise = [], []
    for run in runs:
        summary = getattr(run, "summary", None)
        if not isinstance(summary, Mapping) or not summary.get("samples_per_s"):
            what = getattr(run, "run_id", type(run).__name__)
            status = getattr(run, "status", "not a RunResult")
            raise ValueError(f"compare: {name} holds {what} ({status}) with no measured samples_per_s")
        values.append(summary["samples_per_s"])
        noise.append(summary.get("within_run_sd"))
    return combine(values, noise)
