"""What every figure shares: which runs are drawn, how runs are labelled, the layout."""

from __future__ import annotations

import plotly.graph_objects as go

from parakit.records.result import RunResult, run_label

TEMPLATE = "plotly_white"
MIB = 2**20
HOVER_RUN = "run %{customdata[0]}<br>%{customdata[1]} x%{customdata[2]}"


def measured_runs(results: list[RunResult], figure: str) -> list[RunResult]:
    """Completed runs whose summary holds ``figure`` (failed/stopped runs have no summary)."""
    return [r for r in results if r.ok and r.summary.get(figure) is not None]


def count(n: int, what: str) -> str:
    return f"{n} {what}{'s' * (n != 1)}"


def skip_note(results: list[RunResult], drawn: int, why: str) -> str:
    return f"{count(len(results) - drawn, 'run')} skipped ({why})" if len(results) > drawn else ""


def model_label(run: RunResult) -> str:
    """Model name plus its options, so runs of a differently sized model never mix."""
    options = run.config.get("model_options") or {}
    sizes = " ".join(f"{k}={v}" for k, v in sorted(options.items()))
    return f"{run.config.get('model')} {sizes}".strip()


def run_axis(fig: go.Figure, runs: list[RunResult]) -> None:
    """x categories are run ids, so two runs with one label stay two; ticks say 'strategy xN'
    (plus the run id only where two labels would collide)."""
    labels = [run_label(r.config, r.world_size) for r in runs]
    ticks = [f"{lab} ({r.run_id})" if labels.count(lab) > 1 else lab
             for lab, r in zip(labels, runs)]
    fig.update_xaxes(type="category", tickmode="array", tickvals=[r.run_id for r in runs],
                     ticktext=ticks)


def finish(fig: go.Figure, title: str, x_title: str, y_title: str, notes: list[str]) -> go.Figure:
    """Shared layout; notes (what was skipped or omitted) go in the subtitle, to be seen."""
    note = "; ".join(n for n in notes if n)
    fig.update_layout(template=TEMPLATE, title={"text": title, "subtitle": {"text": note}},
                      xaxis_title=x_title, yaxis_title=y_title, legend_title_text="")
    return fig
