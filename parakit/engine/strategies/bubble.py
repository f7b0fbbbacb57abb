"""A pipeline rank's bubble, for its report. Apart from pipeline.py, so that the training loop,
which reports every run, imports no torch.distributed.pipelining (and with it dynamo: 1.5 s
on a 2-core CPU) until a run is a pipeline."""

from __future__ import annotations

import statistics
from typing import Any


def pipeline_measures(stats: dict[str, Any], step_times: list[float], warmup: int) -> dict[str, Any]:
    """A pipeline rank's bubble: the share of each step it spent not computing (waiting for a
    neighbour), median over the measured steps, beside the schedule's ideal (p-1)/(v*m+p-1)."""
    busy = stats.get("pipeline_busy_s")
    if not busy:
        return {}
    idle = [1 - b / t for b, t in zip(busy[warmup:], step_times[warmup:]) if t > 0]
    return {
        "bubble": statistics.median(idle) if idle else None,
        "bubble_ideal": stats["bubble_ideal"],
        "stages": stats["stages"],
    }
