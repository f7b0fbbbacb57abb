"""When each rank computed, communicated and waited inside its recorded steps: one row per rank
(records/rank_timeline.py), a second row beneath for its collectives (so communication hidden
behind compute shows as overlapping), a row per CUDA stream on a GPU, and for a pipeline the
planned schedule (records/pipeline_plan.py) beside the measured micro-batch spans."""

from __future__ import annotations

import statistics

from parakit.plots.base import Figure, finish
from parakit.records.pipeline_plan import parse, plan_bubble, planned_schedule
from parakit.records.rank_timeline import COLLECTIVE, COMM, COMPUTE, EXPOSED, IDLE, MAIN, WAIT, RankTimeline
from parakit.records.result import RunResult, run_label

COLOURS = {"forward": "#4c78a8", "backward": "#72b7b2", "optimizer": "#54a24b", "straggler": "#f58518",
           "other": "#9d755d", "kernels": "#4c78a8", EXPOSED: "#e45756", IDLE: "#d8d3cf", COLLECTIVE: "#b279a2",
           WAIT: "#eeeeee", "planned": "#bab0ac"}


def timeline(run: RunResult | list[RunResult]) -> Figure:
    """A run's per-rank timeline of its recorded steps (the profiler's window, by default the
    last 3): forward, backward, optimizer, each collective with its bytes, exposed communication
    and idle time, from the same events and rule as the breakdown. A pipeline also gets each
    rank's planned schedule, and its measured bubble beside the ideal (p-1)/(v*m+p-1).

    Args:
        run: the run; given a list (``%parakit plot timeline``), the latest one with a timeline.

    Returns:
        A figure with a row per rank and lane, ms on the x axis; an empty one, saying why, for a
        run with no recorded step.
    """
    runs = run if isinstance(run, list) else [run]
    drawn = next((r for r in reversed(runs) if r.timelines), None)
    fig = Figure()
    if drawn is None:
        why = "no run with a recorded step (profile_every=0, or recorded before timelines were kept)"
        return finish(fig, "Per-rank timeline", "ms", "", [why])
    lines = drawn.timelines
    zero = min(t.origin_s for t in lines)
    rows: list[str] = []
    bars: dict[str, dict[str, list]] = {}
    for t in lines:
        shift = (t.origin_s - zero) * 1e3
        lanes = [MAIN, COMM] + sorted({s.lane for s in t.spans} - {MAIN, COMM})
        rows += [_row(t.rank, lane) for lane in lanes if lane == MAIN or t.lane(lane)]
        for s in t.spans:
            _add(bars, _row(t.rank, s.lane), s.start_s * 1e3 + shift, s.end_s * 1e3 + shift, s.kind, s.name, s.bytes)
    notes = [_pipeline(bars, drawn, lines, zero, rows), _figures(drawn)]
    for group, bar in bars.items():  # one trace per kind of span: hundreds of spans stay light
        fig.add_bar(y=bar["y"], x=bar["x"], base=bar["base"], orientation="h", marker_color=bar["colour"],
                    name=group, text=bar["text"], textposition="inside", insidetextanchor="middle",
                    hovertext=bar["hover"], hoverinfo="text")
    fig.update_layout(barmode="overlay", bargap=0.25, height=220 + 36 * len(rows),
                      legend={"orientation": "h", "y": -0.25 - 1.5 / (len(rows) + 2)})
    fig.update_yaxes(type="category", categoryorder="array", categoryarray=list(reversed(rows)))
    for start, _ in lines[0].step_bounds_s:  # where each recorded step began, on rank 0
        fig.add_vline(x=start * 1e3 + (lines[0].origin_s - zero) * 1e3, line_dash="dot", line_color="#888")
    steps = lines[0].steps
    title = f"Per-rank timeline: {run_label(drawn.config, drawn.world_size)}, steps {steps[0]}-{steps[-1]}"
    notes.append(f"spans closer than {max(t.merged_below_s for t in lines) * 1e3:.3f} ms drawn as one")
    return finish(fig, title, "ms since the first recorded step began", "", notes)


def _row(rank: int, lane: str) -> str:
    return f"rank {rank}" if lane == MAIN else f"rank {rank} {lane}"


def _legend(kind: str, name: str) -> tuple[str, str]:
    """(legend group, colour) of a span: compute by its phase, a pipeline action by F or B."""
    if kind != COMPUTE:
        return kind, COLOURS[kind]
    action = parse(name)
    phase = ("forward" if action[1] == "F" else "backward") if action else name
    return phase, COLOURS.get(phase, COLOURS["other"])


def _add(bars: dict, row: str, start_ms: float, end_ms: float, kind: str, name: str, nbytes,
         group: str | None = None) -> None:
    """One span into its kind's bar trace."""
    legend, colour = _legend(kind, name)
    bar = bars.setdefault(group or legend, {"y": [], "x": [], "base": [], "text": [], "hover": [], "colour": colour})
    what = f"{name}, {nbytes / 2**20:.2f} MiB" if nbytes else name
    bar["y"].append(row)
    bar["x"].append(end_ms - start_ms)
    bar["base"].append(start_ms)
    bar["text"].append(name if parse(name) else "")
    bar["hover"].append(f"{row}: {kind} ({what})<br>{start_ms:.2f}-{end_ms:.2f} ms ({end_ms - start_ms:.2f} ms)")


def _pipeline(bars: dict, run: RunResult, lines: list[RankTimeline], zero: float, rows: list[str]) -> str:
    """The planned schedule, one row per rank above its measured one; the bubbles in a note."""
    orders = [t.planned for t in lines]
    if not all(orders):
        return ""
    measured = {"F": [], "B": []}
    for t in lines:
        for s in t.lane(MAIN):
            action = parse(s.name) if s.kind == COMPUTE else None
            if action:
                measured["F" if action[1] == "F" else "B"].append(s.end_s - s.start_s)
    forward = statistics.median(measured["F"]) if measured["F"] else 1e-3
    backward = statistics.median(measured["B"]) if measured["B"] else 2 * forward
    plan = planned_schedule(orders, forward, backward)
    starts = [min(t.step_bounds_s[i][0] + t.origin_s - zero for t in lines) for i in range(len(lines[0].steps))]
    for start in starts:
        for a in plan:
            row = f"rank {lines[a.rank].rank} planned"
            if row not in rows:
                rows.insert(rows.index(_row(lines[a.rank].rank, MAIN)), row)
            _add(bars, row, (start + a.start_s) * 1e3, (start + a.end_s) * 1e3, COMPUTE, a.action, None,
                 group="planned " + _legend(COMPUTE, a.action)[0])
    s = run.summary
    measured_bubble = f"{s['bubble']:.2f}" if s.get("bubble") is not None else "not measured"
    ideal = f"{s['bubble_ideal']:.2f}" if s.get("bubble_ideal") is not None else "?"
    return (f"bubble measured {measured_bubble} against ideal (p-1)/(v*m+p-1) = {ideal} "
            f"(planned at the measured median F {forward * 1e3:.2f} ms, B {backward * 1e3:.2f} ms: "
            f"{plan_bubble(plan):.2f})")


def _figures(run: RunResult) -> str:
    """Each rank's idle time per step and the stragglers named, from the run's summary."""
    s = run.summary
    idle = s.get("rank_idle_time_s")
    text = "idle per step: " + ", ".join(f"rank {r} {v * 1e3:.2f} ms" for r, v in enumerate(idle)) if idle else ""
    if s.get("stragglers"):
        text += f"; straggler: rank {', '.join(map(str, s['stragglers']))}"
    return text
