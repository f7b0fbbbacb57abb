"""Per-rank figures of a run, and the one rule that names a straggler: a rank whose compute is
consistently slower than the other ranks' beyond the noise of the steps.

The rule, on the profiler's recorded steps (each rank's compute time per step, the breakdown's):

- in each recorded step, the log of a rank's compute over the median of the other ranks';
- a straggler when the lower end of that log-ratio's one-sided 95 % interval over the recorded
  steps (mean - t x standard error, Student's t for that many steps) is above log(1.1): slower
  by 10 % or more, step after step, beyond what the steps' own spread explains.

So a rank slowed in one step by something else on the machine is not named, and a run with few
recorded steps names only a clear straggler (3 steps: t = 2.92). It needs 2 or more recorded
steps and 2 or more ranks doing the same work: a pipeline's ranks hold different stages, whose
compute differs by design, so none is named there.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from parakit.config.run import RunConfig, Strategy
from parakit.config.layouts import Hybrid
from parakit.records.result import StepRecord

LEAST_RATIO = 1.1
# Student's t, one-sided 95 %, by degrees of freedom (recorded steps - 1); the normal's beyond.
T_95 = {1: 6.314, 2: 2.920, 3: 2.353, 4: 2.132, 5: 2.015, 6: 1.943, 7: 1.895, 8: 1.860, 9: 1.833, 10: 1.812,
        15: 1.753, 20: 1.725, 30: 1.697}
METHOD = ("a rank whose compute (the profiler's, per recorded step) over the median of the other ranks' is "
          "above 1.1 at the lower end of its one-sided 95 % interval over the recorded steps (mean of the "
          "log-ratio - Student's t x its standard error)")


def _t(freedom: int) -> float:
    return T_95.get(freedom) or next((v for k, v in sorted(T_95.items()) if k >= freedom), 1.645)


def find_stragglers(compute: list[list[float]]) -> list[int]:
    """The straggler ranks, by the rule above.

    Args:
        compute: per recorded step, each rank's compute time (seconds); 2 or more steps, 2 or
            more ranks, every time above 0.

    Returns:
        The ranks named, ascending; [] when none is slower beyond the noise.
    """
    logs = [[math.log(c) for c in step] for step in compute]
    named = []
    for r in range(len(logs[0])):
        excess = [step[r] - statistics.median(step[:r] + step[r + 1:]) for step in logs]
        low = statistics.mean(excess) - _t(len(excess) - 1) * statistics.stdev(excess) / math.sqrt(len(excess))
        if low > math.log(LEAST_RATIO):
            named.append(r)
    return named


def _recorded(measured: list[StepRecord]) -> list[list[float]]:
    return [s.rank_compute_time_s for s in measured if s.rank_compute_time_s is not None]


def why_no_stragglers(measured: list[StepRecord], config: RunConfig) -> str | None:
    """Why a run's stragglers cannot be told (``unmeasured``), or None when they can."""
    if config.workers < 2 or config.strategy is Strategy.SINGLE:
        return "one rank: no other to compare with"
    if config.strategy is Strategy.PIPELINE or (config.strategy is Strategy.HYBRID and config.hybrid is Hybrid.PIPELINE_DDP):
        return "a pipeline's ranks hold different stages, whose compute differs by design"
    recorded = _recorded(measured)
    if len(recorded) < 2:
        return f"needs 2 or more steps the profiler recorded after the warm-up ({len(recorded)} here)"
    if any(c <= 0 for step in recorded for c in step):
        return "a rank recorded no compute in a step"
    return None


def rank_figures(measured: list[StepRecord], config: RunConfig) -> dict[str, Any]:
    """Summary's per-rank figures and its stragglers (None where ``why_no_stragglers`` says)."""
    def each_rank(steps: list[list[float]]) -> list[float] | None:
        return [statistics.median(column) for column in zip(*steps)] if steps else None

    recorded = [s for s in measured if s.rank_compute_time_s is not None]
    return {
        "rank_step_time_s": each_rank([s.rank_step_time_s for s in measured]),
        "rank_compute_time_s": each_rank([s.rank_compute_time_s for s in recorded]),
        "rank_idle_time_s": each_rank([s.rank_idle_time_s for s in recorded]),
        "stragglers": None if why_no_stragglers(measured, config) else find_stragglers(_recorded(measured)),
    }
