"""The panel's four live figures (loss, speed-up, breakdown, power): redrawn from the finished
runs when one ends, and their running traces filled from rank 0's progress while one goes."""

from __future__ import annotations

import plotly.graph_objects as go

from parakit.plots.base import TEMPLATE
from parakit.plots.measures import BREAKDOWN_PARTS, breakdown, power
from parakit.plots.runs import SPEEDUP_TITLE, loss, speedup
from parakit.records.result import RunResult, run_label

# Two figures side by side fit a 1280-px notebook (its cells are ~1180 px wide).
FIGURE_WIDTH_PX, FIGURE_HEIGHT_PX = 580, 360


class PanelFigures:
    """The FigureWidgets, by name, and how they are drawn."""

    def __init__(self):
        self.figures = {name: go.FigureWidget() for name in ("loss", "speedup", "breakdown", "power")}

    def runs(self, results: list[RunResult], partial: dict[str, tuple[list[int], list[float]]],
             live: str | None, most_workers: int) -> bool:
        """Redraw from the finished runs: a loss line each (the loss seen live for a stopped
        one) plus an empty live line, and the speed-up so far. Returns True when the speed-up
        has no baseline yet."""
        figure = loss(results)
        by_id = {r.run_id: r for r in results}
        for trace in figure.data:
            run = by_id[trace.customdata[0][0]]
            trace.name = f"{run_label(run.config, run.world_size)} · {run.run_id[-6:]}"
        for run_id, (xs, ys) in partial.items():
            run = by_id[run_id]
            figure.add_scatter(x=xs, y=ys, mode="lines", line={"dash": "dot"},
                               name=f"{run_label(run.config, run.world_size)} · {run_id[-6:]} ({run.status})")
        figure.add_scatter(x=[], y=[], mode="lines+markers", name=f"running: {live}" if live else "running",
                           line={"color": "black"}, showlegend=live is not None)
        _replace(self.figures["loss"], figure)
        missing = False
        try:
            figure = speedup(results)
        except ValueError as e:  # no 1-worker run yet: the ideal line, and what is missing
            missing = True
            figure = go.Figure()
            figure.add_scatter(x=[1, most_workers], y=[1, most_workers], mode="lines",
                               name="ideal (linear)", line={"dash": "dash", "color": "gray"})
            figure.update_layout(template=TEMPLATE, xaxis_title="workers (ranks)",
                                 yaxis_title="speed-up (x)",
                                 title={"text": SPEEDUP_TITLE,
                                        "subtitle": {"text": str(e)}})
        _replace(self.figures["speedup"], figure)
        figure = breakdown(results)
        for key, (name, colour) in BREAKDOWN_PARTS.items():  # the running run's bar, filled live
            figure.add_bar(x=[], y=[], name=f"running: {name}", marker_color=colour, opacity=0.5,
                           showlegend=False, hovertemplate=f"running: {name} %{{y:.2f}} ms<extra></extra>")
        _replace(self.figures["breakdown"], figure)
        figure = power(results)
        figure.add_scatter(x=[], y=[], mode="lines", name=f"running: {live}" if live else "running",
                           line={"color": "black"}, showlegend=live is not None)
        _replace(self.figures["power"], figure)
        return missing

    def live(self, steps: list[int], losses: list[float], split: dict[str, float] | None,
             power_samples: list[tuple[float, float]]) -> None:
        """The running run's traces: its loss so far, its latest breakdown, its power."""
        with self.figures["loss"].batch_update():
            line = self.figures["loss"].data[-1]
            line.x, line.y = list(steps), list(losses)
        if split:
            figure = self.figures["breakdown"]
            with figure.batch_update():
                for trace, key in zip(figure.data[-len(BREAKDOWN_PARTS):], BREAKDOWN_PARTS):
                    trace.x, trace.y = ["running"], [split[key] * 1e3]
                axis = figure.layout.xaxis
                if axis.tickvals is not None and "running" not in axis.tickvals:
                    axis.tickvals, axis.ticktext = (*axis.tickvals, "running"), (*axis.ticktext, "running")
        if power_samples:
            with self.figures["power"].batch_update():
                line = self.figures["power"].data[-1]
                line.x, line.y = [t for t, _ in power_samples], [w for _, w in power_samples]


def _replace(widget: go.FigureWidget, figure: go.Figure) -> None:
    """Show ``figure`` in ``widget`` in one message to the browser."""
    figure.update_layout(width=FIGURE_WIDTH_PX, height=FIGURE_HEIGHT_PX)
    with widget.batch_update():
        widget.data = []
        widget.add_traces(list(figure.data))
        widget.layout = figure.layout
