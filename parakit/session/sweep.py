"""A sweep: every combination of lists of settings, checked before the first run, run one after
another on a session's engines. ``Session.sweep`` is the entry point; the ``%parakit sweep``
magic, ``parakit sweep`` and the demo call it."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from typing import Any

from parakit.records.result import STOPPED, RunResult, headline, run_label
from parakit.session.preflight import check_runs
from parakit.config.shell import in_notebook
from parakit.session.progress import note

# The settings a list may be given for, in the order the product runs them: workers last, so
# each configuration's speed-up curve fills in one go.
SWEEPABLE = ("model", "batch_size", "strategy", "precision", "compression", "sync", "workers")


def combinations(workers: Any = None, **settings: Any) -> list[dict[str, Any]]:
    """Each combination of the lists, as Session.run's settings.

    Args:
        workers: a worker count or a list of them (None: the session's default).
        **settings: RunConfig fields; for those in ``SWEEPABLE`` a list or tuple means each of
            them, anything else is passed to every run as it is.

    Returns:
        One settings dict per run, in run order.
    """
    settings = {**settings, "workers": workers}
    lists = {name: list(settings.pop(name)) if isinstance(settings.get(name), (list, tuple)) else [settings.pop(name, None)]
             for name in SWEEPABLE}
    for name, values in lists.items():
        if not values:
            raise ValueError(f"{name} is an empty list; give at least one value (or leave it out)")
    return [{**settings, **{k: v for k, v in zip(lists, values) if v is not None}}
            for values in itertools.product(*lists.values())]


def repeated(combos: list[Any], repeats: Any) -> list[Any]:
    """The combinations ``repeats`` times over, alternating: A B A B, so a drift of the machine
    (the other core's load, a warming cache) falls on every configuration alike.

    Raises:
        ValueError: ``repeats`` is not a whole number from 1 to 20.
    """
    if isinstance(repeats, bool) or not isinstance(repeats, int) or not 1 <= repeats <= MAX_REPEATS:
        raise ValueError(f"repeats must be a whole number from 1 to {MAX_REPEATS} (got {repeats!r})")
    return [combo for _ in range(repeats) for combo in combos]


MAX_REPEATS = 20


def run_sweep(session: Any, combos: list[dict[str, Any]],
          on_run: Callable[[int, int, str, RunResult | None], None] | None = None,
          prices: Any = None, repeats: int = 1) -> list[RunResult]:
    """Check every combination against the session's engines, then run them in order,
    ``repeats`` times over, alternating (``repeated``); with repeats, say what they cost.

    Args:
        session: where they run (a Session: its ``preflight()`` and ``run()``).
        combos: settings per run (``combinations``).
        on_run: called before each run with (i, n, label, None) and after it with
            (i, n, label, result): a front end's progress.
        prices: what to cost every run with (None: the session's; see ``Session.run``).
        repeats: how many times to run each combination.

    Returns:
        The RunResults in run order; a stopped run ends the sweep (it is the last one).

    Raises:
        ValueError: before the first run, if any combination does not fit (how many, and the
            first of them).
    """
    configs = check_runs(session.preflight(), combos)
    combos, configs = repeated(combos, repeats), repeated(configs, repeats)
    started = time.monotonic()
    results = []
    for i, (settings, config) in enumerate(zip(combos, configs), start=1):
        label = run_label(config.describe(), config.workers)
        if on_run:
            on_run(i, len(combos), label, None)
        result = session.run(**{**settings, "workers": config.workers}, prices=prices)
        results.append(result)
        if on_run:
            on_run(i, len(combos), label, result)
        if result.status == STOPPED:
            break
    if repeats > 1 and getattr(session, "progress", False):
        spent = time.monotonic() - started
        note(f"{repeats} repeats of {len(combos) // repeats} configuration(s): {spent:.0f} s in all, "
             f"{spent / repeats:.0f} s a repeat; the intervals come from their spread")
    return results


def said_in_a_terminal(i: int, n: int, label: str, result: RunResult | None) -> None:
    """A session's own ``on_run`` while it prints progress. In a notebook each run's own
    progress line ends as its summary: one line a run. A terminal's bar is cleared, so the
    summary is said here."""
    if result is not None and not in_notebook():
        note(f"sweep {i}/{n}: {headline(result)}")
