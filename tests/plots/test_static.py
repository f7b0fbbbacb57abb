"""A parakit figure shown in a notebook carries an SVG copy beside plotly's JSON (drawn by
kaleido in the Chromium already on the machine); where copies are switched off, there is no
browser, or kaleido fails, it carries none, with at most one warning and no traceback."""

from __future__ import annotations

import base64
import copy
import pickle
import re
import warnings

import nbformat
import plotly.graph_objects as go
import plotly.io as pio
import pytest
from nbconvert import HTMLExporter

from parakit.plots import Figure, base, static
from parakit.plots import runs as plots
from test_plots import make_run

PLOTLY = "application/vnd.plotly.v1+json"
BROWSER = static.find_browser()
needs_browser = pytest.mark.skipif(BROWSER is None, reason="no Chrome or Chromium on this machine "
                                   "(install the chromium package) to draw the SVG copy")


@pytest.fixture
def results():
    return [make_run("r1", 1, 100.0), make_run("r2", 2, 180.0), make_run("r4", 4, 320.0)]


@pytest.fixture(autouse=True)
def kernel_renderer(monkeypatch):
    """Plotly's default inside a Jupyter kernel (outside one it is '' or 'browser' and the
    bundle is empty), with static copies on unless a test turns them off."""
    monkeypatch.setattr(pio.renderers, "default", "plotly_mimetype")
    monkeypatch.delenv(static.SWITCH, raising=False)


@pytest.fixture
def fresh_process(monkeypatch):
    """As a new process would be: no browser started, copies not yet turned off (the module's
    browser, if a test started one, is put back afterwards)."""
    monkeypatch.setattr(static, "_browser", None)
    monkeypatch.setattr(static, "_off_because", None)


def static_warnings(caught) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, UserWarning)
            and "static SVG copy" in str(w.message)]


def test_figures_are_real_plotly_figures(results):
    fig = plots.speedup(results)
    assert isinstance(fig, Figure) and isinstance(fig, go.Figure)
    fig.update_layout(title_text="renamed")
    copied = go.Figure(fig)
    assert type(copied) is go.Figure
    assert copied.data == fig.data and copied.layout.title.text == "renamed"
    assert type(Figure(go.Figure(go.Bar(y=[1, 2])))) is Figure
    assert type(pickle.loads(pickle.dumps(fig))) is Figure
    assert type(copy.deepcopy(fig)) is Figure  # (its data compares unequal, as go.Figure's does)


@needs_browser
def test_bundle_has_svg_beside_plotly_json(results):
    fig = plots.loss(results)
    bundle = fig._repr_mimebundle_()
    assert PLOTLY in bundle
    svg = bundle[static.SVG]
    assert svg.startswith("<svg") and svg.rstrip().endswith("</svg>")
    assert 'width="700" height="450"' in svg  # the default size where the figure sets none
    assert "Loss per step" in svg  # the figure itself, title included
    assert len(svg) < 200_000


@needs_browser
def test_svg_takes_the_figures_own_size(results):
    fig = plots.throughput(results).update_layout(width=500, height=300)
    assert 'width="500" height="300"' in fig._repr_mimebundle_()[static.SVG]


@needs_browser
def test_no_svg_when_the_front_end_excludes_it(results, monkeypatch):
    monkeypatch.setattr(static, "svg_of", lambda fig: pytest.fail("drawn though excluded"))
    assert static.SVG not in plots.speedup(results)._repr_mimebundle_(exclude=[static.SVG])


def test_switched_off_no_svg_and_no_warning(results, monkeypatch, fresh_process):
    monkeypatch.setenv(static.SWITCH, "0")
    monkeypatch.setattr(static, "find_browser", lambda: pytest.fail("looked for a browser"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bundles = [plots.speedup(results)._repr_mimebundle_() for _ in range(3)]
    assert all(PLOTLY in b and static.SVG not in b for b in bundles)
    assert static_warnings(caught) == []


def test_no_browser_no_svg_and_one_warning(results, monkeypatch, fresh_process):
    monkeypatch.setattr(static, "find_browser", lambda: None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bundles = [f(results)._repr_mimebundle_() for f in (plots.speedup, plots.loss, plots.memory)]
    assert all(PLOTLY in b and static.SVG not in b for b in bundles)
    (message,) = static_warnings(caught)
    assert "no Chrome or Chromium found" in message and "BROWSER_PATH" in message
    assert "\n" not in message


def test_kaleido_failure_no_svg_and_one_warning(results, monkeypatch, fresh_process, tmp_path):
    # a real failure: kaleido is asked to start a browser that is not there
    monkeypatch.setattr(static, "find_browser", lambda: str(tmp_path / "no-such-chrome"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bundles = [plots.speedup(results)._repr_mimebundle_() for _ in range(2)]
    assert all(PLOTLY in b and static.SVG not in b for b in bundles)
    (message,) = static_warnings(caught)
    assert "kaleido failed" in message and "\n" not in message
    assert static._browser is None


def test_notebook_output_carries_the_svg(results, monkeypatch):
    shown = []
    monkeypatch.setattr(base, "in_notebook", lambda: True)
    monkeypatch.setattr(static, "svg_of", lambda fig: "<svg>drawn</svg>")
    monkeypatch.setattr("IPython.display.display", lambda obj, raw=False: shown.append((obj, raw)))
    plots.speedup(results)._ipython_display_()
    ((bundle, raw),) = shown
    assert raw and PLOTLY in bundle and bundle[static.SVG] == "<svg>drawn</svg>"


@pytest.mark.parametrize("renderer", ["plotly_mimetype", ""])  # "": plain Python's default
def test_outside_a_notebook_no_browser_starts(results, monkeypatch, renderer):
    monkeypatch.setattr(pio.renderers, "default", renderer)
    monkeypatch.setattr(static, "svg_of", lambda fig: pytest.fail("drew an SVG outside a notebook"))
    started = static._browser
    plots.speedup(results)._ipython_display_()  # plotly's own display, whatever it prints here
    # (what it prints depends on whether an earlier test left an IPython shell: not asserted)
    assert static._browser is started  # no browser was started for it


@needs_browser
def test_nbconvert_html_shows_the_svg(results):
    bundle = plots.speedup(results)._repr_mimebundle_()
    output = nbformat.v4.new_output("display_data", data=bundle)
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("speedup(results)", outputs=[output])])
    nbformat.validate(nb)
    html, _ = HTMLExporter().from_notebook_node(nb)
    inline = re.findall(r"<svg class=\"main-svg\"", html)
    images = re.findall(r'<img[^>]*src="data:image/svg\+xml;base64,([^"]+)"', html)
    assert len(inline) + len(images) == 1
    if images:
        assert base64.b64decode(images[0]).decode() == bundle[static.SVG]
