"""Figures from run records: pure functions, ``list[RunResult] -> plotly Figure``.

Only completed runs that measured the figure are drawn; whatever is left out is said on the
figure, and a figure that could not be measured (None) is left out, never drawn as 0.
``speedup_table`` feeds the speed-up plot, the demo's and the magics' tables and the report,
and takes its speed-ups from the runs frame's one rule (records/frame.py), so they all agree.
"""

from __future__ import annotations

from typing import Callable

import pandas as pd
import plotly.graph_objects as go

from parakit.plots.measures import breakdown, wire_bytes
from parakit.plots.measures import power as power_figure
from parakit.plots.memory import memory
from parakit.plots.time import loss_time
from parakit.plots.base import (
    HOVER_RUN,
    Figure,
    count,
    finish,
    measured_runs,
    model_label,
    run_axis,
    skip_note,
)
from parakit.plots.context import context
from parakit.plots.experts import experts
from parakit.plots.switching import mark_switches, switch_cost
from parakit.plots.timeline import timeline
from parakit.records.frame import speedup_against
from parakit.records.intervals import speedup_text
from parakit.records.result import RunResult, StepRecord, run_label
from parakit.records.segments import segment_results
from parakit.records.store import runs_frame

TABLE_COLUMNS = ["run_id", "label", "model", "strategy", "workers", "samples_per_s", "step_time_ms",
                 "speedup", "efficiency", "samples_per_s_low", "samples_per_s_high", "speedup_low",
                 "speedup_high", "verdict", "said", "scaling_group", "missing_baseline"]
_NUMBERS = TABLE_COLUMNS[5:13]


# -- speed-up ------------------------------------------------------------------------------
def speedup_table(results: list[RunResult], baseline: RunResult | None = None) -> pd.DataFrame:
    """Throughput, speed-up and efficiency of each completed run.

    Args:
        results: Runs of any status; runs without a measured samples/s are left out.
        baseline: The run every speed-up is taken against. When None, each run's speed-up is
            the runs frame's (records/frame.py, the one rule: a 1-worker run of the same
            strategy and settings, else a single run of the same settings).

    Returns:
        One row per run, columns ``TABLE_COLUMNS``. ``speedup`` and ``efficiency``
        (speed-up / workers) are NaN where no baseline exists, never a made-up number;
        ``missing_baseline`` then says which run would give one. ``speedup_low`` /
        ``speedup_high``, ``samples_per_s_low`` / ``_high`` are their 95 % intervals,
        ``verdict`` the words against the baseline and ``said`` the speed-up as every front end
        says it ("2 workers: 1.54x (1.31-1.81)"), all from records/intervals.py.

    Raises:
        ValueError: If ``baseline`` is given but has no measured samples/s.
    """
    if baseline is not None and not measured_runs([baseline], "samples_per_s"):
        raise ValueError(f"baseline run {baseline.run_id} ({baseline.status}) has no "
                         "samples/s; pass a completed run")
    runs = measured_runs(results, "samples_per_s")
    frame = runs_frame(runs).set_index("run_id") if runs else None
    rows = []
    for run in runs:
        rate = run.summary["samples_per_s"]
        if baseline is not None:
            found, efficiency = speedup_against(run, baseline)
            speed, low, high, verdict, group, missing = (found.ratio, found.low, found.high,
                                                         found.verdict if run is not baseline else None, None, None)
        else:
            speed, low, high, verdict, group, missing = (frame.at[run.run_id, c] for c in (
                "speedup", "speedup_low", "speedup_high", "verdict", "scaling_group", "missing_baseline"))
        said = speedup_text(run.world_size, speed, low, high) if _known(speed) and isinstance(verdict, str) else None
        step_s = run.summary.get("step_time_s")
        rows.append([run.run_id, run_label(run.config, run.world_size), model_label(run),
                     run.config.get("strategy"), run.world_size,
                     rate, step_s * 1e3 if step_s is not None else None,
                     speed, (efficiency if baseline is not None else speed / run.world_size)
                     if _known(speed) else None,
                     run.summary.get("samples_per_s_low"), run.summary.get("samples_per_s_high"),
                     low, high, verdict, said, group, missing])
    table = pd.DataFrame(rows, columns=TABLE_COLUMNS)
    # None -> NaN in float columns (not an object column); NaN is "no number", never 0.
    table = table.astype({col: float for col in _NUMBERS})
    return table.sort_values(["model", "workers", "strategy"], kind="stable", ignore_index=True)


SPEEDUP_TITLE = "Speed-up vs 1 worker (samples/s), 95 % intervals"


def _known(value) -> bool:
    return value is not None and value == value  # NaN is not equal to itself


def speedup(results: list[RunResult], baseline: RunResult | None = None) -> Figure:
    """Samples/s speed-up against 1 worker, one line per (strategy, model), with ideal linear.

    Args:
        results: Runs of any status; see ``speedup_table`` for which are drawn.
        baseline: The run to compare against; by default the 1-worker run of the same model
            and batch size.

    Returns:
        A line figure, x = workers, y = speed-up (x), plus a dashed ideal line y = x.

    Raises:
        ValueError: If no run has a baseline to compare against.
    """
    table = speedup_table(results, baseline)
    drawn = table.dropna(subset=["speedup"])
    missing = sorted(set(table["missing_baseline"].dropna()))
    if drawn.empty:
        raise ValueError("no 1-worker baseline: " + ("; ".join(f"add {m}" for m in missing) if missing else
                         "include a 1-worker run of the same settings") + " (or pass baseline=)")
    # One line per group of runs that differ only in their worker count (its label names the
    # settings), so a bf16 line and an fp32 line of one strategy never join.
    drawn = drawn.assign(line=drawn["scaling_group"].fillna("") if baseline is None else
                         drawn["strategy"] + " · " + drawn["model"])
    fig = Figure()
    for line, group in drawn.groupby("line", sort=True):
        group = group.sort_values("workers")
        # Error bars from the same 95 % intervals the table and the verdicts use.
        fig.add_scatter(
            x=group["workers"], y=group["speedup"], mode="lines+markers",
            name=line.removeprefix("strong: ").removeprefix("weak: ") if baseline is None else line,
            error_y={"type": "data", "array": (group["speedup_high"] - group["speedup"]).tolist(),
                     "arrayminus": (group["speedup"] - group["speedup_low"]).tolist(), "thickness": 1.5},
            customdata=group[["run_id", "strategy", "workers", "samples_per_s", "efficiency",
                              "speedup_low", "speedup_high"]].assign(verdict=group["verdict"].fillna("the baseline")),
            hovertemplate=HOVER_RUN + "<br>speed-up %{y:.2f}x (95 %: %{customdata[5]:.2f}-%{customdata[6]:.2f}), "
            "%{customdata[7]}<br>efficiency %{customdata[4]:.0%}, %{customdata[3]:.1f} samples/s<extra></extra>",
        )
    beyond = drawn[drawn["speedup_low"] > drawn["workers"]]
    if not beyond.empty:
        fig.add_scatter(x=beyond["workers"], y=beyond["speedup"], mode="markers", name="beyond the ideal",
                        marker={"symbol": "star-open", "size": 16, "color": "crimson"}, hoverinfo="skip")
    top = int(drawn["workers"].max())
    fig.add_scatter(
        x=[1, top], y=[1, top], mode="lines", name="ideal (linear)",
        line={"dash": "dash", "color": "gray"}, hoverinfo="skip",
    )
    fig.update_xaxes(tick0=1, dtick=1 if top <= 16 else None)
    no_base = len(table) - len(drawn)
    notes = [skip_note(results, len(table), "failed, stopped or unmeasured"),
             f"{count(no_base, 'run')} without a 1-worker baseline" if no_base else ""]
    notes += [f"missing: {m}" for m in missing]
    if not beyond.empty:
        notes.append(SUPERLINEAR)
    return finish(fig, SPEEDUP_TITLE, "workers (ranks)",
                   "speed-up (x)", notes)


SUPERLINEAR = ("starred: faster than the ideal beyond its interval; each worker's smaller share may fit a "
               "faster cache, or the 1-worker baseline ran slow (repeat both: repeats=3)")


# -- per run -------------------------------------------------------------------------------
def throughput(results: list[RunResult]) -> Figure:
    """Samples/s of each completed run as a bar labelled 'strategy xN'.

    Args:
        results: Runs of any status; those without a measured samples/s are skipped.

    Returns:
        A bar figure, one bar per run.
    """
    results = segment_results(results)  # a switched run: a bar per segment
    runs = measured_runs(results, "samples_per_s")
    rates = [r.summary["samples_per_s"] for r in runs]
    fig = Figure(go.Bar(
        x=[r.run_id for r in runs], y=rates,
        # 95 % intervals (records/intervals.py); a record from before they existed has none
        error_y={"type": "data", "array": [(r.summary.get("samples_per_s_high") or v) - v for r, v in zip(runs, rates)],
                 "arrayminus": [v - (r.summary.get("samples_per_s_low") or v) for r, v in zip(runs, rates)]},
        customdata=[[r.run_id, r.config.get("strategy"), r.world_size, model_label(r)]
                    for r in runs],
        texttemplate="%{y:.0f}", textposition="outside",
        hovertemplate=HOVER_RUN + "<br>%{customdata[3]}<br>%{y:.1f} samples/s<extra></extra>",
    ))
    run_axis(fig, runs)
    return finish(fig, "Throughput per run (median step, 95 % intervals)", "run", "samples/s",
                   [skip_note(results, len(runs), "failed, stopped or unmeasured")])


def _per_step(results: list[RunResult], value: Callable[[StepRecord], float | None],
              title: str, y_title: str, unit: str) -> Figure:
    """One line per run over steps (a switched run: one per segment, with a marker at each
    switch); warm-up points faded and open, and the first warm-up's span shaded."""
    whole = [r for r in results if r.ok and r.steps]
    runs = [r for r in segment_results(whole) if r.steps]  # a switched run: each segment a line
    fig = Figure()
    for run in runs:
        warm = [s.warmup for s in run.steps]
        fig.add_scatter(
            x=[s.step for s in run.steps],
            y=[value(s) for s in run.steps],  # None stays None: a gap in the line, not a 0
            mode="lines+markers", name=f"{run_label(run.config, run.world_size)} · {run.run_id}",
            marker={"opacity": [0.35 if w else 1.0 for w in warm],
                    "symbol": ["circle-open" if w else "circle" for w in warm]},
            customdata=[[run.run_id, run.config.get("strategy"), run.world_size,
                         "warm-up" if w else "measured"] for w in warm],
            hovertemplate=HOVER_RUN + f"<br>step %{{x}} (%{{customdata[3]}})<br>%{{y:.4g}} {unit}"
            "<extra></extra>",
        )
    mark_switches(fig, whole)
    # the runs' own warm-up; a segment's warm-up (after its switch) shows in its faded points
    last_warm = max((s.step for r in whole for s in r.steps[:1 + r.config.get("warmup_steps", 0)] if s.warmup),
                    default=None)
    if last_warm is not None:
        # Warm-up is recorded but left out of the summaries: shade it so the eye does too.
        fig.add_vrect(x0=-0.5, x1=last_warm + 0.5, fillcolor="gray", opacity=0.12, line_width=0,
                      annotation_text="warm-up", annotation_position="top left")
    return finish(fig, title, "step", y_title,
                   [skip_note(results, len(whole), "failed, stopped or no steps")])


def loss(results: list[RunResult]) -> Figure:
    """Training loss per step, one line per run, warm-up steps faded and shaded.

    Args:
        results: Runs of any status; runs without steps are skipped.

    Returns:
        A line figure; a step with no loss is a gap, not a zero.
    """
    return _per_step(results, lambda s: s.loss, "Loss per step", "loss", "")


def step_times(results: list[RunResult]) -> Figure:
    """Step time (slowest rank) per step in ms, one line per run, warm-up faded and shaded.

    Args:
        results: Runs of any status; runs without steps are skipped.

    Returns:
        A line figure.
    """
    return _per_step(results, lambda s: s.step_time_s * 1e3, "Step time per step (slowest rank)",
                     "step time (ms)", "ms")


# What ``%parakit plot KIND`` can draw: a new figure is one more line here.
PLOTS: dict[str, Callable[[list[RunResult]], Figure]] = {
    "speedup": speedup,
    "loss": loss,
    "memory": memory,
    "throughput": throughput,
    "step_times": step_times,
    "breakdown": breakdown,
    "bytes": wire_bytes,
    "power": power_figure,
    "loss-time": loss_time,
    "switches": switch_cost,
    "experts": experts,
    "context": context,
    "timeline": timeline,
}
