"""Which collective each rank is in, read from the engines' Flight Recorders
(engine/flight_recorder.py), and which one a run stopped in and who is missing from it.

A collective mismatch on gloo ends one of two ways. Ranks in different ops (an all_reduce
against a broadcast, a skipped barrier) wait for ever: a hang, named by ``mismatch``. The same
op on tensors of different sizes makes gloo abort the rank that receives more than it expects
(``Received data size doesn't match expected size``: SIGABRT, the engine dies), or, for a
broadcast into a larger tensor, complete without a word. ``hangs.name_a_death`` names the abort.
"""

from __future__ import annotations

import os
import time
from collections import Counter

from parakit.cluster.engines import EngineSet
from parakit.cluster.placement import EngineInfo
from parakit.engine import flight_recorder
from parakit.engine.flight_recorder import Collective

ANSWER_S = 1.0
"""How long engines get to answer; an answer takes milliseconds where the recorder's thread runs."""


def last_collectives(engines: EngineSet, ranked: list[EngineInfo], then=None) -> tuple[dict[int, list[Collective]], object]:
    """Each rank's last collectives by rank (ranks whose recorder did not answer left out), and
    what ``then()`` returned: it runs while the engines answer (the stacks' own wait)."""
    asked = {rank: flight_recorder.request(os.path.dirname(e.stack_file), e.pid)
             for rank, e in enumerate(ranked) if e.stack_file}
    done = then() if then is not None else None
    found: dict[int, list[Collective]] = {}
    deadline = time.monotonic() + ANSWER_S
    while True:
        for rank, e in enumerate(ranked):
            if asked.get(rank) and rank not in found:
                collectives = flight_recorder.answer(os.path.dirname(e.stack_file), e.pid)
                if collectives is not None:
                    found[rank] = collectives
        if len(found) == sum(asked.values()) or time.monotonic() > deadline:
            return found, done
        time.sleep(0.02)


def mismatch(per_rank: dict[int, list[Collective]], world: int) -> str | None:
    """The collective that did not complete and who is missing from it, in one line; None when
    the recorders show no rank inside a collective (nothing to name).

    The stuck collective is the one most ranks wait in (their oldest that has not completed),
    as most of them called it (op, sizes, dtypes); ties go to the lowest rank's. A rank is missing when it never entered it (its last
    collective of that group came before), entered a different one under the same sequence
    number (another op, or the same op on other sizes or dtypes), or did not answer."""
    waiting = {rank: next((c for c in cs if not c.completed), None) for rank, cs in per_rank.items()}
    waiting = {rank: c for rank, c in waiting.items() if c is not None}
    if not waiting:
        return None
    counts = Counter(c.key for c in waiting.values())
    key = max(counts, key=lambda k: (counts[k], -min(r for r, c in waiting.items() if c.key == k)))
    inside = [c for _, c in sorted(waiting.items()) if c.key == key]
    stuck = max(inside, key=lambda c: sum(c.same_call(other) for other in inside))  # the call most made; ties: lowest rank
    never, different, silent = [], [], []
    for rank in range(world):
        if rank not in per_rank:
            silent.append(rank)
            continue
        same = next((c for c in per_rank[rank] if c.key == key), None)
        if same is None:
            earlier = [c for c in per_rank[rank] if c.group == stuck.group and c.seq < stuck.seq]
            never.append((rank, earlier[-1] if earlier else None))
        elif not same.same_call(stuck):
            different.append((rank, same))
    parts = []
    if never:
        lasts = "; ".join(f"rank {r}'s last: {c.describe()}" if c else f"rank {r}: none in this group" for r, c in never)
        parts.append(f"ranks {[r for r, _ in never]} did not arrive at it (never entered it; {lasts})")
    if different:
        calls = "; ".join(f"rank {r}: {c.describe()}" for r, c in different)
        parts.append(f"ranks {[r for r, _ in different]} entered a different one ({calls})")
    if silent:
        parts.append(f"ranks {silent} did not answer")
    if not parts:
        parts.append(f"every rank entered it (ranks {sorted(r for r, c in waiting.items() if c.key == key)} wait in it)")
    return f"{stuck.describe()} did not complete: " + "; ".join(parts)

