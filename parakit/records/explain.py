"""Where a run's time went, in one sentence: the rule the demo's table, its report and the
panel use to say *why* a second worker paid or did not.

The sentence reads the run's own measurements (records/summary.py): the profiler's breakdown
of a step into compute, communication not hidden behind compute, and idle time, and the
power and energy figures where they were measured. What was not measured is said with its
reason, never guessed.
"""

from __future__ import annotations

from typing import Any

from parakit.records.intervals import compare, speedup_text
from parakit.records.result import RunResult

# The part of the step that is largest names what bounds the run.
_BOUND = {
    "compute_time_s": "compute-bound",
    "exposed_comm_time_s": "communication-bound",
    "idle_time_s": "idle-bound",
}


def bound_by(summary: dict[str, Any]) -> str | None:
    """'compute-bound', 'communication-bound' or 'idle-bound': the largest part of the
    profiled step; None without a breakdown."""
    parts = {k: summary.get(k) for k in _BOUND}
    if any(v is None for v in parts.values()):
        return None
    return _BOUND[max(parts, key=parts.get)]


def where_time_went(result: RunResult, baseline: RunResult | None = None) -> str:
    """One sentence on where ``result``'s step time went, from its breakdown, its bytes and
    its power. A failed run says so; a run without a breakdown says why there is none.

    ``baseline``, the 1-worker run its speed-up is taken against (records.frame's rule), adds
    the speed-up with its 95 % interval and verdict (records.intervals), how compute changed
    and what communication added: the reason a speed-up is what it is."""
    said = against(result, baseline)
    return f"{said}; {_where(result, baseline)}" if said else _where(result, baseline)


def against(result: RunResult, baseline: RunResult | None) -> str | None:
    """'2 workers: 1.54x (1.31-1.81)' against the 1-worker baseline, or '2 workers: no
    measurable difference from 1 (0.93-1.08)'; None without a measured pair, or for the
    baseline itself."""
    measured = [r for r in (result, baseline) if r is not None and r.ok and (r.summary or {}).get("samples_per_s")]
    if baseline is None or baseline is result or len(measured) < 2:
        return None
    found = compare(result, baseline)
    return speedup_text(result.world_size, found.ratio, found.low, found.high, baseline.world_size)


def _where(result: RunResult, baseline: RunResult | None) -> str:
    s = result.summary
    if not result.ok or not s:
        return f"{result.status}: no measured steps to explain"
    if s.get("compute_time_s") is None:
        why = result.unmeasured.get("compute_time_s", "no profiled step")
        return f"no time breakdown ({why})" + _power(result)
    compute, exposed, idle = s["compute_time_s"], s["exposed_comm_time_s"], s["idle_time_s"]
    step = compute + exposed + idle
    if step <= 0:
        return "no time breakdown (the profiled steps took no time)" + _power(result)
    share = lambda v: f"{v / step:.0%}"  # noqa: E731
    if result.world_size <= 1:
        return (f"{share(compute)} of the step computing, {share(idle)} idle "
                f"(Python and waits between operators); one worker sends nothing" + _power(result))
    comm = s["comm_time_s"]
    hidden = max(comm - exposed, 0.0)
    sent = s.get("comm_bytes_per_step")
    what = f"{sent / 2**20:.1f} MB a step" if sent else "its gradients"
    text = (f"{bound_by(s)}: {share(compute)} computing, {share(exposed)} waiting for communication "
            f"({what}, {comm * 1e3:.1f} ms of it, {hidden * 1e3:.1f} ms hidden behind compute), "
            f"{share(idle)} idle")
    was = baseline.summary if baseline is not None and baseline.ok else {}
    if was.get("compute_time_s") is not None:
        text += (f"; against 1 worker, compute went {was['compute_time_s'] * 1e3:.1f} -> {compute * 1e3:.1f} ms "
                 f"a step (ideal {was['compute_time_s'] * 1e3 / result.world_size:.1f}) and communication "
                 f"added {exposed * 1e3:.1f} ms not hidden")
    return text + _power(result)


def _power(result: RunResult) -> str:
    s = result.summary
    if s.get("avg_power_w") is None:
        return ""
    return f"; {s['avg_power_w']:.0f} W, {s['samples_per_j']:.1f} samples/J"


def power_note(results: list[RunResult]) -> str | None:
    """Why power and energy are missing, once for a set of runs (None when every completed
    run measured them)."""
    reasons = sorted({r.unmeasured.get("energy_j", "not measured") for r in results
                      if r.ok and r.summary and r.summary.get("energy_j") is None})
    return f"power and energy not measured: {'; '.join(reasons)}" if reasons else None
