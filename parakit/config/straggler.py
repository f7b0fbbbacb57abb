"""The straggler lever: ``straggler="RANK:FACTOR"`` makes one rank's compute FACTOR times as
slow, so a notebook can show what one slow rank does to the others (they wait for it).

How the engine slows it (engine/straggler.py): before each forward and backward, the rank spends
(FACTOR - 1) x the time its previous forward and backward computed, so its gradients are ready
FACTOR times later, as on a slower device, and every collective its peers share with it starts
that much later: they wait. On a GPU that time is real arithmetic on the device (matrix
products, no collective). On a CPU it is a sleep, marked ``parakit.straggler`` and counted as
that rank's compute (engine/breakdown.py ``classify``, drawn as "straggler" on the timeline):
extra arithmetic would take CPU time from the other ranks wherever engines share cores (a
2-core machine with 2 engines and a notebook), slowing them too and blurring the lesson; a
sleep delays the one rank alone, as a slower chip would.
"""

from __future__ import annotations

from dataclasses import dataclass

from parakit.config.choices import is_number


@dataclass(frozen=True)
class Straggler:
    rank: int
    """The rank made slower."""
    factor: float
    """How many times as long its forward and backward take (above 1)."""


def parse_straggler(value: str | None) -> Straggler | None:
    """"1:2" -> Straggler(rank=1, factor=2.0); None -> None.

    Raises:
        ValueError: not RANK:FACTOR, a rank below 0, or a factor not above 1, in one line.
    """
    if value is None:
        return None
    rank, sep, factor = str(value).partition(":")
    try:
        parsed = Straggler(int(rank), float(factor))
    except ValueError:
        parsed = None
    if not sep or parsed is None or parsed.rank < 0:
        raise ValueError(f"straggler must be RANK:FACTOR, e.g. '1:2' for rank 1 twice as slow (got {value!r})")
    if not is_number(parsed.factor, above=1):
        raise ValueError(f"straggler's factor must be a number above 1, e.g. '1:2' (got {factor!r})")
    return parsed


def check_straggler(value: str | None, workers: int, single: bool) -> str | None:
    """The lever checked against the run, normalised ("1:2.0" -> "1:2"); None when not set.

    Raises:
        ValueError: as ``parse_straggler``; on one worker, or a rank the run does not have.
    """
    straggler = parse_straggler(value)
    if straggler is None:
        return None
    if single or workers < 2:
        raise ValueError(f"straggler makes one rank slower than the others: it needs 2 or more workers "
                         f"(workers is {workers})")
    if straggler.rank >= workers:
        raise ValueError(f"straggler names rank {straggler.rank}, but the run has ranks 0-{workers - 1}")
    return f"{straggler.rank}:{straggler.factor:g}"
