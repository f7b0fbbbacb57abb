"""What every figure shares: the Figure class, which runs are drawn, how runs are labelled,
the layout."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go
import plotly.io as pio
from plotly.io.base_renderers import MimetypeRenderer

from parakit.plots import static
from parakit.records.result import RunResult, run_label
from parakit.config.shell import in_notebook

TEMPLATE = "plotly_white"
MIB = 2**20
HOVER_RUN = "run %{customdata[0]}<br>%{customdata[1]} x%{customdata[2]}"


class Figure(go.Figure):
    """A plotly Figure whose notebook output also carries a static SVG copy
    (``image/svg+xml``) beside plotly's interactive one: Jupyter draws the interactive figure,
    GitHub, nbviewer and nbconvert's HTML, which do not run plotly.js, show the copy.

    Anywhere else it is a plain ``go.Figure`` (terminal IPython and scripts render nothing
    extra), and ``go.Figure(fig)`` copies it. ``PARAKIT_STATIC_FIGURES=0`` leaves the copy out.
    The user's ``plotly.io.renderers.default`` is left as it is.
    """

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None, validate: bool = True,
                          **kwargs: Any) -> dict:
        bundle = super()._repr_mimebundle_(include, exclude, validate, **kwargs)
        # An empty bundle means the default renderer draws elsewhere (a browser tab): no copy
        wanted = static.SVG not in (exclude or ()) and (not include or static.SVG in include)
        if bundle and wanted and (svg := static.svg_of(self)):
            bundle[static.SVG] = svg
        return bundle

    def _ipython_display_(self) -> None:
        # IPython asks for _ipython_display_ before _repr_mimebundle_, and plotly's own shows the
        # bundle without asking this class, so a notebook output is published here instead
        if not (in_notebook() and pio.renderers.render_on_display and pio.renderers.default):
            super()._ipython_display_()  # terminal IPython: plotly's browser tab, no SVG
            return
        from IPython.display import display

        if bundle := self._repr_mimebundle_():
            display(bundle, raw=True)
        # renderers that draw outside the output (say "browser") still do, as in pio.show
        external = [name for name in pio.renderers.default.split("+")
                    if not isinstance(pio.renderers[name], MimetypeRenderer)]
        if external:
            pio.show(self, renderer="+".join(external))


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


def run_ticks(runs: list[RunResult]) -> list[str]:
    """Each run's label, 'strategy xN model', plus its id only where two labels would collide."""
    labels = [run_label(r.config, r.world_size) for r in runs]
    return [f"{lab} ({r.run_id})" if labels.count(lab) > 1 else lab for lab, r in zip(labels, runs)]


def run_axis(fig: Figure, runs: list[RunResult]) -> None:
    """x categories are run ids, so two runs with one label stay two; ticks are ``run_ticks``."""
    fig.update_xaxes(type="category", tickmode="array", tickvals=[r.run_id for r in runs],
                     ticktext=run_ticks(runs))


def finish(fig: Figure, title: str, x_title: str, y_title: str, notes: list[str]) -> Figure:
    """Shared layout; notes (what was skipped or omitted) go in the subtitle, to be seen."""
    note = "; ".join(n for n in notes if n)
    fig.update_layout(template=TEMPLATE, title={"text": title, "subtitle": {"text": note}},
                      xaxis_title=x_title, yaxis_title=y_title, legend_title_text="")
    return fig
