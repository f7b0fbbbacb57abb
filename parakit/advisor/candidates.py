"""Which configurations the advisor weighs, their ranking, and the projection of the best ones
over worker counts. Standard library only: every candidate is a RunConfig that checked itself.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from parakit.advisor.costs import Estimate
from parakit.config.layouts import mesh_sizes
from parakit.config.models import experts_of
from parakit.config.run import Hybrid, RunConfig, Schedule

PRECISIONS = {
    "gpu": ("fp32", "tf32", "fp16", "bf16", "bf16-pure"),
    "cpu": ("fp32", "bf16", "bf16-pure"),  # tf32 and fp16 need a GPU (levers.GPU_ONLY_PRECISIONS)
}
COMPRESSIONS = ("none", "fp16", "bf16", "powersgd:4", "topk:0.01", "randomk:0.01")
STRATEGIES = ("single", "ddp", "fsdp", "pipeline", "tensor", "hybrid", "context", "expert")
MICROBATCHES_PER_RANK = (1, 2, 4)  # pipeline micro-batches tried: p, 2p and 4p
MAX_PROJECTION = 1024


def layouts(workers: int, compressions: Iterable[str], strategies: Iterable[str],
            moe: bool = False) -> list[dict[str, Any]]:
    """Every layout of ``workers`` ranks, before precision; the checks come later. ``moe``: the
    model is a mixture of experts, so strategy expert is one."""
    wanted = set(strategies)
    if workers == 1:
        return [{"strategy": "single"}] if "single" in wanted else []
    out: list[dict[str, Any]] = []
    if "ddp" in wanted:
        out += [{"strategy": "ddp", "compression": c} for c in compressions]
    if "fsdp" in wanted:
        out += [{"strategy": "fsdp", "compression": c} for c in compressions if c in ("none", "fp16", "bf16")]
    if "tensor" in wanted:
        out.append({"strategy": "tensor"})
    if "pipeline" in wanted:
        out += [{"strategy": "pipeline", "schedule": s.value, "microbatches": k * workers}
                for s, k in itertools.product(Schedule, MICROBATCHES_PER_RANK)]
    if "context" in wanted:  # the built-in gpt only: RunConfig drops it for other models
        out.append({"strategy": "context"})
    if "expert" in wanted and moe:  # a mixture of experts only: a dense model has none to spread
        out.append({"strategy": "expert"})
    if "hybrid" in wanted:
        for outer in range(2, workers // 2 + 1):
            if workers % outer == 0 and workers // outer >= 2:
                mesh = f"{outer}x{workers // outer}"
                out += [{"strategy": "hybrid", "hybrid": h.value, "mesh": mesh} for h in Hybrid]
    return out


@dataclass(frozen=True)
class Candidate:
    settings: dict[str, Any]
    """What names the configuration (strategy, workers, precision, compression, schedule,
    microbatches, hybrid, mesh); a run takes them with the settings every candidate shares."""
    config: RunConfig


def candidates(workers: int, base: dict[str, Any], precisions: Iterable[str],
               compressions: Iterable[str] = COMPRESSIONS,
               strategies: Iterable[str] = STRATEGIES) -> tuple[list[Candidate], list[tuple[dict, str]]]:
    """Every configuration of ``workers`` ranks the settings allow, and those they refuse.

    Args:
        workers: ranks.
        base: the settings every candidate shares (model, model_options, batch_size, ...).
        precisions, compressions, strategies: what to try.

    Returns:
        (candidates, [(settings, why it cannot run)]).
    """
    ok, refused = [], []
    compressions = list(compressions)
    moe = isinstance(base.get("model"), str) and experts_of(base.get("model_options") or {}) is not None
    for layout, precision in itertools.product(layouts(workers, compressions, strategies, moe), precisions):
        settings = {**layout, "workers": workers, "precision": precision}
        try:
            ok.append(Candidate(settings, RunConfig(**base, **settings)))
        except ValueError as e:
            refused.append((settings, str(e)))
    return ok, refused


def worker_counts(workers: int, rank_by: str) -> list[int]:
    """The worker counts weighed: ``workers`` when ranking by time. By cost, every power of 2
    below it too: on one count every configuration holds the same devices, so its cost only
    follows its time, while fewer workers, each busier, may cost less per sample."""
    if rank_by != "cost":
        return [workers]
    return sorted({2**k for k in range(workers.bit_length()) if 2**k < workers} | {workers})


def rank(estimates: list[Estimate], by: str = "time") -> list[Estimate]:
    """Fastest first (``by="time"``), or cheapest per sample first (``by="cost"``: those
    without a price after those with one, fastest first among them); those that do not fit
    (or have no estimate) after, with their reasons."""
    def fastest(e: Estimate):
        return (e.step_time_s is None, e.step_time_s or 0.0)

    def cheapest(e: Estimate):
        return (e.cost_per_1k_samples_usd is None, e.cost_per_1k_samples_usd or 0.0, *fastest(e))

    order = {"time": fastest, "cost": cheapest}[by]
    return sorted(estimates, key=lambda e: (not e.fits, *order(e)))


def scaled(settings: dict[str, Any], workers: int) -> dict[str, Any]:
    """The same configuration on ``workers`` ranks: micro-batches per pipeline rank and a
    mesh's inner size kept; 1 worker is ``single`` at the same precision, and ``single`` on
    more is ``ddp``."""
    s = {**settings, "workers": workers}
    if s["strategy"] == "single" and workers > 1:  # one worker's advice grows as plain ddp
        s.update(strategy="ddp", compression="none")
    if workers == 1:
        for key in ("compression", "schedule", "microbatches", "hybrid", "mesh"):
            s.pop(key, None)
        s["strategy"] = "single"
        return s
    if s["strategy"] == "pipeline":
        s["microbatches"] = settings["microbatches"] // settings["workers"] * workers
    if s["strategy"] == "hybrid":
        inner = mesh_sizes(settings["mesh"])[1]
        s["mesh"] = f"{max(1, workers // inner)}x{inner}"
    return s


def projection(settings: dict[str, Any], base: dict[str, Any], up_to: int,
               predict: Callable[[dict[str, Any], RunConfig], Estimate]) -> tuple[list[dict[str, Any]], str | None]:
    """Predicted speed-up and efficiency of one configuration at 1, 2, 4, ... ``up_to`` workers,
    against ``single`` at the same precision (strong scaling: the same global batch).

    Returns:
        (points, why the curve stops early or None); each point has workers, step_time_s,
        samples_per_s, speedup, efficiency.
    """
    points: list[dict[str, Any]] = []
    one_worker = None
    workers, stopped = 1, None
    while workers <= min(up_to, MAX_PROJECTION):
        s = scaled(settings, workers)
        try:
            config = RunConfig(**base, **s)
        except ValueError as e:
            stopped = f"stops at {workers // 2} workers: {e}"
            break
        e = predict(s, config)
        if e.step_time_s is None:
            stopped = f"stops at {workers // 2} workers: {e.reason}"
            break
        one_worker = one_worker or e.samples_per_s
        speedup = e.samples_per_s / one_worker
        points.append({"workers": workers, "step_time_s": e.step_time_s, "samples_per_s": e.samples_per_s,
                       "speedup": speedup, "efficiency": speedup / workers, "fits": e.fits})
        workers *= 2
    return points, stopped
