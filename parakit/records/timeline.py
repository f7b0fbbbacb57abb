"""A run against the wall clock: when its loss reached a target. Comparing methods by steps
hides what asynchronous communication is for (more steps in the same time, or the same loss
sooner), so the rule here reads each step's ``time_s``, the wall clock since the first step."""

from __future__ import annotations

from parakit.records.result import RunResult


def loss_against_time(run: RunResult) -> tuple[list[float], list[float]]:
    """(seconds since the first step began, loss) of each step that has both."""
    points = [(s.time_s, s.loss) for s in run.steps if s.time_s is not None and s.loss is not None]
    return [t for t, _ in points], [v for _, v in points]


def time_to_loss(run: RunResult, target: float) -> float | None:
    """Seconds until the loss first reached ``target``, interpolated linearly between the two
    steps around the crossing (the first step's own end when it starts at or under it); None
    when the run never reached it, or has no step times (records from before they were kept)."""
    times, losses = loss_against_time(run)
    for i, (t, v) in enumerate(zip(times, losses)):
        if v <= target:
            if i == 0:
                return t
            t0, v0 = times[i - 1], losses[i - 1]
            return t0 + (t - t0) * (v0 - target) / (v0 - v)
    return None


def why_no_time(run: RunResult, target: float) -> str:
    """Why ``time_to_loss`` is None for ``run``, in a few words."""
    if not run.steps or all(s.time_s is None for s in run.steps):
        return "no step times (a record from before they were kept)"
    last = next((s.loss for s in reversed(run.steps) if s.loss is not None), None)
    return f"not reached (last loss {last:.4f})" if last is not None else "no loss recorded"
