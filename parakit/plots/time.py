"""Runs against the wall clock: loss over seconds, and the time each run took to reach a
target loss. Asynchronous methods trade staleness for time, so their point shows here and not
in a loss-per-step figure."""

from __future__ import annotations

from parakit.plots.base import HOVER_RUN, Figure, finish, run_axis, skip_note
from parakit.plots.switching import mark_switches
from parakit.records.result import RunResult, run_label
from parakit.records.segments import segment_results
from parakit.records.timeline import loss_against_time, time_to_loss, why_no_time


def loss_time(results: list[RunResult]) -> Figure:
    """Loss against seconds since each run's first step, one line per run.

    Args:
        results: Runs of any status; runs without step times (failed before a step, or
            recorded before step times were kept) are skipped, counted in the subtitle.

    Returns:
        A line figure, x = seconds, y = loss.
    """
    fig = Figure()
    drawn = 0
    for run in segment_results(results):  # a switched run: a line per segment
        times, losses = loss_against_time(run)
        if not times:
            continue
        drawn += 1
        fig.add_scatter(
            x=times, y=losses, mode="lines", name=f"{run_label(run.config, run.world_size)} · {run.run_id}",
            customdata=[[run.run_id, run.config.get("strategy"), run.world_size]] * len(times),
            hovertemplate=HOVER_RUN + "<br>%{x:.2f} s: loss %{y:.4g}<extra></extra>",
        )
    mark_switches(fig, results, axis="time")
    drawn = len({r.run_id for r in results if loss_against_time(r)[0]})
    return finish(fig, "Loss against time", "seconds since the first step", "loss",
                  [skip_note(results, drawn, "no step times")])


def time_to_loss_figure(results: list[RunResult], target: float) -> Figure:
    """Seconds each run took to reach ``target`` (``records.timeline.time_to_loss``), one bar
    per run; a run that never reached it has no bar, and says so on the axis.

    Args:
        results: Runs of any status (those without steps are skipped).
        target: the loss to reach.
    """
    runs = [r for r in results if r.steps]
    times = [time_to_loss(r, target) for r in runs]
    fig = Figure()
    fig.add_bar(x=[r.run_id for r in runs], y=times, marker_color="#4C78A8", name="time to loss",
                customdata=[[r.run_id, r.config.get("strategy"), r.world_size] for r in runs],
                hovertemplate=HOVER_RUN + "<br>%{y:.2f} s<extra></extra>")
    run_axis(fig, runs)
    for run, t in zip(runs, times):
        if t is None:
            fig.add_annotation(x=run.run_id, y=0, text=why_no_time(run, target), showarrow=False, yshift=12,
                               textangle=-90, yanchor="bottom", font={"size": 10, "color": "#666"})
    return finish(fig, f"Time to reach loss {target:g}", "run", "seconds", [skip_note(results, len(runs), "no steps")])
