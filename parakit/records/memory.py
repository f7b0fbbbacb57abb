"""A run's memory, summarised from its ranks: each part (parameters, gradients, optimizer
state, activations) and the allocator's figures at the largest rank, the one that decides
whether a model fits; and why a figure is missing, in the ranks' own words."""

from __future__ import annotations

from typing import Any

from parakit.records.rank import RankReport
from parakit.records.result import RankInfo

PARTS = ("param_bytes", "gradient_bytes", "optimizer_bytes", "activation_bytes")
"""The parts of a rank's memory the run counts, bottom to top as the memory figure stacks them."""
ALLOCATOR = ("allocated_peak_bytes", "reserved_peak_bytes", "fragmentation")


def memory_summary(ranks: list[RankInfo]) -> dict[str, Any]:
    """Each part and allocator figure, largest over the ranks that measured it (None when none
    did). Each is a rank's own maximum: the parts may come from different ranks (a pipeline's
    first stage holds the most activations, its last the largest head)."""
    return {key: _largest(getattr(r, key) for r in ranks) for key in (*PARTS, *ALLOCATOR)}


def measured_memory_per_rank(ranks: list[RankInfo]) -> tuple[int | None, dict[str, int | None]]:
    """The one rule for "memory per rank", which the fit compares with its limit: on a GPU the
    allocator's peak (``max_memory_allocated``) of the largest rank; on a CPU the tensors the
    rank holding the most measured (parameters + gradients + optimizer state + activations;
    not the RSS, which holds the interpreter and torch, which no layout changes). Also that
    rank's parts. (None, {}) where there are no ranks; None where a part was not measured."""
    if not ranks:
        return None, {}
    parts = [{k: getattr(r, k, None) for k in PARTS} for r in ranks]
    fullest = max(parts, key=lambda p: sum(v or 0 for v in p.values()))
    if ranks[0].peak_mem_kind == "cuda_max_allocated":
        return _largest(r.peak_mem_bytes for r in ranks), fullest
    if any(v is None for p in parts for v in p.values()):
        return None, fullest
    return max(sum(p.values()) for p in parts), fullest


def _largest(values) -> int | float | None:
    known = [v for v in values if v is not None]
    return max(known) if known else None


def memory_unmeasured(summary: dict[str, Any], reports: list[RankReport]) -> dict[str, str]:
    """Why each memory figure of ``summary`` is None, and why a memory snapshot asked for was
    not taken: the first rank's reason that gives one."""
    reasons: dict[str, str] = {}
    for report in reports:
        for key, why in (report.memory_unmeasured or {}).items():
            reasons.setdefault(key, why)
    return {key: why for key, why in reasons.items()
            if key == "memory_snapshot" or (key in summary and summary[key] is None)}


def memory_methods(summary: dict[str, Any], reports: list[RankReport]) -> dict[str, str]:
    """How the memory figures were found, in words, for the summary's ``method``."""
    out = {
        "param_bytes": "largest rank: local bytes of its parameters (its shard of a DTensor)",
        "optimizer_bytes": "largest rank: local bytes of its optimizer state tensors",
    }
    if summary.get("gradient_bytes") is not None:
        out["gradient_bytes"] = "largest rank: local bytes of its parameters' .grad after the last step"
    if summary.get("activation_bytes") is not None:
        step = next((r.activation_step for r in reports if r.activation_step is not None), None)
        out["activation_bytes"] = (
            f"largest rank: the most bytes saved for backward held at once during step {step} (the last "
            "warm-up step), counted with torch.autograd.graph.saved_tensors_hooks, each storage once, "
            "parameters and their views left out")
    if summary.get("reserved_peak_bytes") is not None:
        out["reserved_peak_bytes"] = ("largest rank: torch.cuda.max_memory_reserved since the run's start; "
                                      "fragmentation: 1 - max_memory_allocated / max_memory_reserved, "
                                      "largest rank")
    return out
