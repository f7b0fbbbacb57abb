"""A context-parallel run's own figures, from its ranks' reports: the path attention took and
the bytes sent round the ring (engine/strategies/context.py). {} for any other run, so its
summary has no such keys."""

from __future__ import annotations

import statistics
from typing import Any

from parakit.records.rank import RankReport


def context_summary(reports: list[RankReport], warmup_steps: int) -> dict[str, Any]:
    """Summary's ``context_path`` and ``ring_bytes_per_step``: the largest sender's bytes per
    step, mean over the measured steps (every step where the run measured none)."""
    rings = [r.ring_bytes for r in reports if r.ring_bytes]
    if not rings:
        return {}
    per_step = [max(step) for step in zip(*rings)]
    measured = per_step[warmup_steps:] or per_step
    return {"context_path": next(r.context_path for r in reports if r.context_path),
            "ring_bytes_per_step": statistics.mean(measured)}
