"""A mixture of experts' routing in a run's records: each step's tokens per expert (every rank's,
added up), its load imbalance, and the all-to-all bytes; and their summary over the measured
steps. The one rule for the imbalance is ``load_imbalance``."""

from __future__ import annotations

import statistics
from typing import Any

from parakit.records.rank import RankReport


def load_imbalance(tokens: list[int]) -> float | None:
    """The most tokens one expert took over the mean per expert: 1 when every expert takes the
    same, E when one takes them all. Under strategy expert the rank holding the busiest expert
    computes longest, and every rank waits for it in the combine's all-to-all. None without tokens."""
    if not tokens or not sum(tokens):
        return None
    return max(tokens) / (sum(tokens) / len(tokens))


def expert_step(reports: list[RankReport], i: int) -> dict[str, Any]:
    """StepRecord's expert fields for step ``i`` (by attribute); {} for a dense model."""
    if not all(r.expert_tokens and len(r.expert_tokens) > i for r in reports):
        return {}
    tokens = [sum(counts) for counts in zip(*(r.expert_tokens[i] for r in reports))]
    return {"expert_tokens": tokens, "expert_imbalance": load_imbalance(tokens),
            "rank_all_to_all_bytes": [r.all_to_all_bytes[i] for r in reports]}


def expert_summary(measured: list) -> dict[str, Any]:
    """The mean imbalance over the measured steps, and the bytes the largest all-to-all sender
    sent per step (mean); None for a dense model."""
    imbalances = [s.expert_imbalance for s in measured if s.expert_imbalance is not None]
    sent = [max(s.rank_all_to_all_bytes) for s in measured if s.rank_all_to_all_bytes]
    return {"expert_imbalance": statistics.mean(imbalances) if imbalances else None,
            "all_to_all_bytes_per_step": statistics.mean(sent) if sent else None}


def tokens_per_rank(tokens: list[int], ranks: int) -> list[int]:
    """The tokens each rank's experts took under strategy expert: rank r holds experts
    [r E/R, (r+1) E/R)."""
    local = len(tokens) // ranks
    return [sum(tokens[r * local:(r + 1) * local]) for r in range(ranks)]
