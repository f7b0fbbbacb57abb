"""A rank's strategy-specific figures for its report, from its Parallel's ``stats()``: a
pipeline's bubble (bubble.py), a context run's path and ring bytes, a mixture of experts'
routing (engine/experts.py). Apart from the strategies themselves, so the training loop, which
reports every run, imports none of them."""

from __future__ import annotations

from typing import Any

from parakit.engine.strategies.bubble import pipeline_measures


def strategy_measures(stats: dict[str, Any], step_times: list[float], warmup: int) -> dict[str, Any]:
    """RankReport's fields that one layout fills, and where the rank sat on the run's mesh."""
    return {**pipeline_measures(stats, step_times, warmup), **context_measures(stats),
            **expert_measures(stats, len(step_times)), "mesh_place": stats.get("mesh_place")}


def context_measures(stats: dict[str, Any]) -> dict[str, Any]:
    """Under context parallelism: which path attention took, and the bytes this rank sent round
    the ring in each step (strategies/context.py)."""
    if "context_path" not in stats:
        return {}
    return {"context_path": stats["context_path"], "ring_bytes": stats["ring_bytes"] or None}


def expert_measures(stats: dict[str, Any], steps: int) -> dict[str, Any]:
    """A mixture of experts (any layout): per completed step, the tokens this rank sent to each
    expert and the bytes its all-to-alls sent (engine/experts.py's log); {} for a dense model."""
    if "expert_tokens" not in stats:
        return {}
    return {"expert_tokens": stats["expert_tokens"][:steps], "all_to_all_bytes": stats["all_to_all_bytes"][:steps]}
