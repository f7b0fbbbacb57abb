"""The fit finder's figure: the largest model per layout, and what fills each layout's memory
at that size, against the limit."""

from __future__ import annotations

from typing import Any

from plotly.subplots import make_subplots

from parakit.plots.base import TEMPLATE, Figure
from parakit.plots.memory import PART_STYLE  # the parts as the memory figure draws them

MIB = 2**20


def fit_figure(result: Any) -> Figure:
    """Left: the largest ``vary`` per layout (measured; a layout where even the first value
    did not fit has no bar). Right: each layout's memory per rank at that size, stacked by part,
    with the limit as a line and the advisor's prediction as a marker."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=(f"largest {result.vary}", "memory per rank at it (MiB)"),
                        figure=Figure())
    labels = [layout.label for layout in result.layouts]
    fig.add_bar(x=labels, y=[layout.largest for layout in result.layouts], name=f"largest {result.vary}",
                marker_color="#72B7B2", showlegend=False, row=1, col=1,
                hovertemplate="%{x}: " + result.vary + " %{y}<extra></extra>")
    best = [layout.at_largest for layout in result.layouts]
    for key, (name, colour) in PART_STYLE.items():
        fig.add_bar(x=labels, y=[(b.parts.get(key) or 0) / MIB if b else None for b in best], name=name,
                    marker_color=colour, row=1, col=2, hovertemplate="%{x}: " + name + " %{y:.1f} MiB<extra></extra>")
    fig.add_scatter(x=labels, y=[b.predicted / MIB if b and b.predicted is not None else None for b in best],
                    mode="markers", name="predicted (advisor)", row=1, col=2,
                    marker={"symbol": "line-ew-open", "size": 26, "color": "black"},
                    hovertemplate="predicted %{y:.1f} MiB<extra></extra>")
    fig.add_hline(y=result.memory_limit / MIB, line_dash="dash", line_color="#B00020", row=1, col=2,
                  annotation_text="limit", annotation_position="top left")
    fig.update_layout(template=TEMPLATE, barmode="stack", legend_title_text="",
                      title={"text": f"What fits in {result.memory_limit / MIB:.0f} MiB per rank",
                             "subtitle": {"text": result.measure}})
    return fig
