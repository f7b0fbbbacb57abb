"""A pipeline's planned schedule placed in time: each rank's actions in its schedule's own order
(RankTimeline.planned: torch's action names, "0F1" = stage 0, forward, micro-batch 1), each
started as soon as its rank is free and what it needs is done:

- a forward of stage s needs stage s-1's forward of the same micro-batch;
- a backward of stage s needs its own forward and stage s+1's backward of the same micro-batch
  (the last stage's backward follows its forward: the loss);
- a weight-gradient action (W, zero-bubble schedules) needs its stage's input-gradient (I), which
  is placed as a backward is.

With every forward taking ``forward_s`` and every backward ``backward_s`` (the measured medians),
this is the schedule a pipeline with no other cost would run: its bubble is the ideal one,
(p-1)/(v*m+p-1) for the classic schedules, which ``plan_bubble`` lets a test check.
"""

from __future__ import annotations

import re
from typing import NamedTuple

_ACTION = re.compile(r"^(\d+)([A-Z]+)(\d+)$")


class PlannedAction(NamedTuple):
    rank: int
    start_s: float
    end_s: float
    action: str


def parse(action: str) -> tuple[int, str, int] | None:
    """"0F1" -> (0, "F", 1); None for anything else."""
    m = _ACTION.match(action)
    return (int(m.group(1)), m.group(2), int(m.group(3))) if m else None


def _needs(stage: int, kind: str, mb: int, stages: int) -> list[tuple[int, str, int]]:
    if kind == "F":
        return [(stage - 1, "F", mb)] if stage > 0 else []
    if kind == "W":
        return [(stage, "I", mb)]
    after = (stage + 1, kind, mb) if stage + 1 < stages else (stage, "F", mb)
    return [(stage, "F", mb), after]


def planned_schedule(orders: list[list[str]], forward_s: float, backward_s: float) -> list[PlannedAction]:
    """Each rank's ``orders`` (rank r's list at index r) placed in time from 0 (see the module's
    doc); an action whose needs never come is left out."""
    actions = [[parse(a) for a in order if parse(a)] for order in orders]
    stages = 1 + max((s for order in actions for s, _, _ in order), default=0)
    done: dict[tuple[int, str, int], float] = {}
    free = [0.0] * len(actions)
    at = [0] * len(actions)
    out: list[PlannedAction] = []
    moved = True
    while moved:
        moved = False
        for rank, order in enumerate(actions):
            while at[rank] < len(order):
                stage, kind, mb = order[at[rank]]
                needs = _needs(stage, kind, mb, stages)
                if any(n not in done for n in needs):
                    break
                start = max([free[rank]] + [done[n] for n in needs])
                end = start + (forward_s if kind == "F" else backward_s)
                done[(stage, kind, mb)] = free[rank] = end
                out.append(PlannedAction(rank, start, end, f"{stage}{kind}{mb}"))
                at[rank] += 1
                moved = True
    return out


def plan_bubble(plan: list[PlannedAction]) -> float | None:
    """The planned schedule's bubble: the share of ranks x its length in which no action runs."""
    if not plan:
        return None
    length = max(a.end_s for a in plan) - min(a.start_s for a in plan)
    ranks = len({a.rank for a in plan})
    return 1 - sum(a.end_s - a.start_s for a in plan) / (ranks * length)
