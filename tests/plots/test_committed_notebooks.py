"""The committed example notebooks show their figures without plotly.js: every saved figure
output carries a static image beside plotly's JSON, and nbconvert's HTML (what nbviewer shows)
holds one image per figure. Reads the saved files only; nothing is executed
(``python notebooks/execute.py`` refreshes them)."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
from nbconvert import HTMLExporter

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("*.ipynb"))
PLOTLY = "application/vnd.plotly.v1+json"
STATIC = ("image/svg+xml", "image/png")
MAX_COPY_BYTES = 200_000  # plotly's SVGs here are 5-80 KB; more would bloat the repository
# nbconvert draws an image output as <img src="data:..."> (lab template) or inline <svg>
HTML_IMAGE = re.compile(r'<img[^>]*src="data:image/(?:svg\+xml|png);base64,|<svg class="main-svg"')


def outputs(nb: nbformat.NotebookNode) -> list[dict]:
    return [out for cell in nb.cells for out in cell.get("outputs", []) if "data" in out]


def test_there_are_notebooks_with_figures():
    assert len(NOTEBOOKS) >= 7
    assert sum(PLOTLY in out["data"] for p in NOTEBOOKS for out in outputs(nbformat.read(p, 4))) >= 7


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_figure_output_has_a_static_copy(path):
    figures = [out["data"] for out in outputs(nbformat.read(path, 4)) if PLOTLY in out["data"]]
    bare = [i for i, data in enumerate(figures, 1) if not any(m in data for m in STATIC)]
    assert not bare, f"figures {bare} of {path.name} have no static copy: run python notebooks/execute.py {path.stem}"
    for data in figures:
        copy = data.get("image/svg+xml") or data["image/png"]
        assert len(copy) < MAX_COPY_BYTES
        assert "image/svg+xml" not in data or copy.lstrip().startswith("<svg")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_nbconvert_html_shows_one_image_per_figure(path):
    nb = nbformat.read(path, 4)
    images = [out for out in outputs(nb) if any(m in out["data"] for m in STATIC)]
    figures = [out for out in outputs(nb) if PLOTLY in out["data"]]
    html, _ = HTMLExporter().from_notebook_node(nb)
    assert len(HTML_IMAGE.findall(html)) == len(images) >= len(figures)
