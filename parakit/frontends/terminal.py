"""Figures wherever IPython runs. In a notebook a plotly figure draws itself; in terminal
IPython plotly's default renderer opens a browser, and where there is none it raised "could not
locate runnable browser". There each figure is written as a self-contained HTML file instead,
and shown as its path."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import plotly.graph_objects as go

from parakit.config.shell import in_notebook


class FigureFile(go.Figure):
    """A figure also kept as an HTML file (``html_path``); IPython shows it as that path."""

    def _ipython_display_(self) -> None:
        print(f"[parakit] figure written to {self._html_path} (open it in a browser)")

    @property
    def html_path(self) -> Path:
        return self._html_path


def for_this_frontend(figure: go.Figure, name: str, folder: str | Path) -> go.Figure:
    """``figure`` itself in a notebook; elsewhere a FigureFile written to
    ``folder/figures/<name>-<time>.html`` (plotly.js inside: it opens offline)."""
    if in_notebook():
        return figure
    out = FigureFile(figure)
    path = Path(folder) / "figures" / f"{name}-{datetime.now():%Y%m%d-%H%M%S-%f}.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    out.write_html(path, include_plotlyjs=True, full_html=True)
    out._html_path = path
    return out
