"""Figures of an Advice: the projected speed-up and efficiency from 1 to N workers with the
points measured on the engines over them (each with its 95 % interval), and predicted against
measured step time. Pure functions ``Advice -> plotly Figure``, in the style of ``plots``; the
Advice is a record (records/advice.py), so nothing here imports the cost model."""

from __future__ import annotations

from plotly.colors import qualitative
from plotly.subplots import make_subplots

from parakit.records.advice import Advice
from parakit.plots.base import TEMPLATE, Figure

COLOURS = qualitative.Plotly


def projection(advice: Advice) -> Figure:
    """Predicted speed-up (left) and efficiency (right) against workers for the top
    configurations, with measured points as markers and the ideal as a dashed line.

    Where communication stops paying, the speed-up flattens and efficiency falls: that is the
    cost model's alpha-beta communication (and the pipeline bubble) growing against compute
    that shrinks as 1/workers.

    Args:
        advice: what ``parakit.advise`` returned.

    Returns:
        A figure with two panels sharing the log2 worker axis.

    Raises:
        ValueError: if the advice has no projection (no configuration fits).
    """
    if not advice.projections:
        raise ValueError("this advice has no projection: no configuration fits (see advice.frame()'s reason column)")
    fig = make_subplots(rows=1, cols=2, subplot_titles=("speed-up vs 1 worker", "efficiency (speed-up / workers)"),
                        figure=Figure())
    top = 1
    notes = []
    for i, p in enumerate(advice.projections):
        colour = COLOURS[i % len(COLOURS)]
        x = [q["workers"] for q in p["points"]]
        top = max([top, *x])
        custom = [[q["step_time_s"] * 1e3, q["samples_per_s"]] for q in p["points"]]
        hover = ("%{x} workers: %{y:.3g}<br>step %{customdata[0]:.2f} ms, "
                 "%{customdata[1]:.1f} samples/s<extra>" + p["label"] + " (predicted)</extra>")
        for col, key in ((1, "speedup"), (2, "efficiency")):
            fig.add_scatter(x=x, y=[q[key] for q in p["points"]], mode="lines", name=f"{p['label']} (predicted)",
                            line={"color": colour}, legendgroup=p["label"], showlegend=col == 1,
                            customdata=custom, hovertemplate=hover, row=1, col=col)
            dots = [q for q in p["measured"] if q.get("step_time_s")]
            per = [q["workers"] if key == "efficiency" else 1 for q in dots]
            # A measured speed-up carries its 95 % interval and verdict (the runs frame's rule).
            fig.add_scatter(x=[q["workers"] for q in dots], y=[q["speedup"] / n for q, n in zip(dots, per)],
                            error_y=_interval(dots, per), customdata=[[q.get("verdict") or ""] for q in dots],
                            mode="markers", name=f"{p['label']} (measured)", legendgroup=p["label"],
                            marker={"color": colour, "size": 10, "symbol": "diamond"}, showlegend=col == 1 and bool(dots),
                            hovertemplate="%{x} workers: %{y:.3g} measured %{customdata[0]}<extra></extra>",
                            row=1, col=col)
        if p["stopped"]:
            notes.append(f"{p['label']} {p['stopped']}")
    fig.add_scatter(x=[1, top], y=[1, top], mode="lines", name="ideal (linear)",
                    line={"dash": "dash", "color": "gray"}, hoverinfo="skip", row=1, col=1)
    fig.add_scatter(x=[1, top], y=[1, 1], mode="lines", name="ideal", showlegend=False,
                    line={"dash": "dash", "color": "gray"}, hoverinfo="skip", row=1, col=2)
    fig.update_xaxes(type="log", dtick=0.30103, title_text="workers (ranks)")  # a tick per power of 2
    fig.update_yaxes(title_text="speed-up (x)", row=1, col=1)
    fig.update_yaxes(title_text="efficiency", tickformat=".0%", row=1, col=2)
    title = f"Projected scaling of {advice.shape.name} on {advice.hardware.name} (strong scaling, same global batch)"
    fig.update_layout(template=TEMPLATE, title={"text": title, "subtitle": {"text": "; ".join(notes)}},
                      legend_title_text="")
    return fig


def _interval(dots: list[dict], per: list[int]) -> dict:
    """Error bars from each measured point's 95 % interval (none for a baseline at 1)."""
    def gap(q, n, side):
        return abs(q.get(f"speedup_{side}", q["speedup"]) - q["speedup"]) / n

    return {"type": "data", "symmetric": False, "array": [gap(q, n, "high") for q, n in zip(dots, per)],
            "arrayminus": [gap(q, n, "low") for q, n in zip(dots, per)], "visible": any("speedup_low" in q for q in dots)}


def verification(advice: Advice) -> Figure:
    """Predicted against measured step time of the verified configurations (ms), with y = x.

    Raises:
        ValueError: if nothing was verified (``verify=True`` runs the top configurations).
    """
    done = [v for v in advice.verified if v["measured_step_time_s"]]
    if not done:
        raise ValueError("nothing was verified; run advise with verify=True (--verify)")
    measured = [v["measured_step_time_s"] * 1e3 for v in done]
    predicted = [v["predicted_step_time_s"] * 1e3 for v in done]
    fig = Figure()
    fig.add_scatter(x=measured, y=predicted, mode="markers+text", text=[v["label"] for v in done],
                    textposition="top center", name="configuration",
                    customdata=[[v["run_id"], v["error"]] for v in done],
                    hovertemplate="%{text}<br>measured %{x:.2f} ms, predicted %{y:.2f} ms"
                    "<br>error %{customdata[1]:.0%}, run %{customdata[0]}<extra></extra>")
    top = max(measured + predicted) * 1.1
    fig.add_scatter(x=[0, top], y=[0, top], mode="lines", name="predicted = measured",
                    line={"dash": "dash", "color": "gray"}, hoverinfo="skip")
    note = f"median error {advice.median_error:.0%} over {len(done)} runs"
    fig.update_layout(template=TEMPLATE, title={"text": "Predicted against measured step time",
                                                "subtitle": {"text": note}},
                      xaxis_title="measured (ms)", yaxis_title="predicted (ms)", legend_title_text="")
    return fig
