"""The control panel in a real browser.

JupyterLab runs on localhost with a copy of notebooks/01-quickstart.ipynb (outputs removed);
headless Chromium, driven by Playwright, runs every cell but the last (``%parakit stop``),
checks that every widget and plotly figure rendered, clicks the panel's ``bf16`` precision and
Run, and waits for the run's line on the loss figure. Then the last cell stops the engines. A
screenshot of the panel and of the page is kept (``PARAKIT_ARTIFACTS``, else tests/artifacts/).

Uses the system's Chromium (Debian: ``apt-get install chromium``; ``.ci/run`` installs it), never
a browser download; skipped only where there is none.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from browser_helpers import (
    ABOVE_LAST_DONE,
    CHROMIUM_FLAGS,
    FIGURES,
    KERNEL_IDLE,
    OUTPUTS,
    RUN_ALL_ABOVE_LAST,
    RUN_LAST,
    artifacts_dir,
    copy_without_outputs,
    find_chromium,
    jupyter_lab,
)

from parakit.plots.runs import SPEEDUP_TITLE

NOTEBOOK = Path(__file__).parents[2] / "notebooks" / "01-quickstart.ipynb"
# Figures the notebook draws: the speed-up and loss plots, and the panel's four live figures.
STATIC_FIGURES = {SPEEDUP_TITLE, "Loss per step"}
PANEL_FIGURES = 4
# What JupyterLab shows where a widget or an output did not render.
RENDER_FAILURES = ("Error displaying widget", "No renderer could be found", "Javascript Error",
                   "Loading widget...")
RUN_ALL_S = 180  # engines start (~10 s on 2 cores) and two small runs
PANEL_RUN_S = 120


@pytest.fixture(scope="module")
def chromium() -> str:
    path = find_chromium()
    if path is None:
        pytest.skip("no Chromium found (install Debian's `chromium` package, or set PARAKIT_CHROMIUM "
                    "to a Chromium binary); .ci/run installs it where it can")
    return path


@pytest.fixture(scope="module")
def lab(chromium, tmp_path_factory):
    """One JupyterLab and one headless Chromium for the module's notebooks: (lab, browser, root)."""
    from playwright.sync_api import sync_playwright

    root = tmp_path_factory.mktemp("lab") / "root"
    root.mkdir()
    with jupyter_lab(root, artifacts_dir() / "jupyterlab.log") as server, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        try:
            yield server, browser, root
        finally:
            browser.close()


def _in_a_page(lab, notebook: str, check, viewport=(1920, 1200)) -> None:
    """Open ``notebook`` in a fresh page and run ``check(page, url)``; a screenshot and the
    console's last errors are kept when it fails."""
    server, browser, _ = lab
    page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
    console_errors: list[str] = []
    page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
    try:
        check(page, server.page_url(notebook))
    except BaseException:
        page.screenshot(path=artifacts_dir() / f"browser-failure-{Path(notebook).stem}.png")
        print("browser console errors:", *console_errors[-20:], sep="\n  ")
        raise
    finally:
        page.close()


@pytest.mark.slow
def test_panel_renders_runs_and_draws_in_a_browser(lab):
    notebook = copy_without_outputs(NOTEBOOK, lab[2] / NOTEBOOK.name)
    assert "".join(notebook["cells"][-1]["source"]).strip() == "%parakit stop", \
        "the test runs every cell but the last, which must stop the engines"
    _in_a_page(lab, NOTEBOOK.name, lambda page, url: _run_and_check(page, url, artifacts_dir()))


# A notebook of the test's own: a model and its data defined in cells, used by name from
# %parakit run and from the panel.
OWN_MODEL_CELLS = [
    "%load_ext parakit",
    "import torch\nfrom torch import nn\n\n"
    "class Tiny(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
    "        self.fc = nn.Linear(16, 4)\n\n    def forward(self, x):\n        return self.fc(x)\n\n"
    "def batches(step, global_batch_size):\n    g = torch.Generator().manual_seed(step)\n"
    "    return torch.randn(global_batch_size, 16, generator=g), torch.randint(0, 4, (global_batch_size,), generator=g)",
    "%parakit start -n 2 --cpu",
    "r = %parakit run --model Tiny --data batches --workers 2 --steps 6 --batch-size 8\nr.status",
    "panel = %parakit panel --model Tiny --data batches\npanel",
    "%parakit stop",
]


@pytest.mark.slow
def test_your_own_model_from_a_cell_runs_from_the_magic_and_the_panel_without_stderr(lab):
    import nbformat

    book = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in OWN_MODEL_CELLS])
    book.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(book, lab[2] / "own-model.ipynb")
    _in_a_page(lab, "own-model.ipynb", _run_own_model, viewport=(1280, 1000))


def _not_warnings(page) -> list[str]:
    """stderr outputs that are not warnings: JupyterLab paints each pink, as if it were an error."""
    return [o["text"] for c in page.evaluate(OUTPUTS) for o in c["outputs"]
            if o.get("name") == "stderr" and "Warning" not in "".join(o["text"])]


def _run_own_model(page, url: str) -> None:
    page.goto(url)
    page.wait_for_function(KERNEL_IDLE, timeout=60_000)
    page.evaluate(RUN_ALL_ABOVE_LAST)
    page.wait_for_function(ABOVE_LAST_DONE, timeout=RUN_ALL_S * 1000, polling=500)
    cells = page.evaluate(OUTPUTS)
    errors = [(c["source"].splitlines()[0], o.get("ename"), o.get("evalue"))
              for c in cells for o in c["outputs"] if o["output_type"] == "error"]
    assert not errors, f"cells failed: {errors}"
    run_cell = next(c for c in cells if c["source"].startswith("r = %parakit run"))
    assert "'ok'" in str(run_cell["outputs"]), run_cell["outputs"]
    assert not _not_warnings(page)
    _wait_until_rendered(page)

    panel = page.locator(".widget-vbox").filter(has=page.locator(".widget-toggle-buttons")).first
    model = panel.locator(".widget-toggle-buttons").filter(has_text="model")
    model.get_by_role("button", name="Tiny", exact=True).click()
    steps = panel.locator(".widget-inline-hbox").filter(has_text="steps").locator("input")
    steps.fill("8")
    steps.press("Enter")
    run = panel.locator("button.widget-button.mod-success", has_text="Run")
    assert run.is_enabled(), f"Run is disabled: {panel.locator('.widget-html').all_inner_texts()}"
    run.click()
    _wait_for_finished_run(page, "Tiny", steps=8)
    status = panel.locator(".widget-html").all_inner_texts()[-1]
    assert "Tiny" in status and "samples/s" in status, status  # the run's one-line summary
    assert not _not_warnings(page)
    panel.screenshot(path=artifacts_dir() / "own-model-panel.png")
    _run_last_cell_to_stop(page)
    assert not _not_warnings(page)


def _run_and_check(page, url: str, artifacts: Path) -> None:
    page.goto(url)
    page.wait_for_function(KERNEL_IDLE, timeout=60_000)
    page.evaluate(RUN_ALL_ABOVE_LAST)
    page.wait_for_function(ABOVE_LAST_DONE, timeout=RUN_ALL_S * 1000, polling=500)

    errors = [(c["source"].splitlines()[0], o.get("ename"), o.get("evalue"))
              for c in page.evaluate(OUTPUTS) for o in c["outputs"] if o["output_type"] == "error"]
    assert not errors, f"cells failed: {errors}"
    _wait_until_rendered(page)
    figures = page.evaluate(FIGURES)
    outputs = {f["title"] for f in figures if not f["in_widget"]}
    assert STATIC_FIGURES <= outputs, f"plotly figures drawn: {figures}"
    assert sum(f["in_widget"] for f in figures) == PANEL_FIGURES, f"plotly figures drawn: {figures}"
    assert all(f["drawn"] for f in figures), f"a figure has no SVG: {figures}"

    panel = page.locator(".widget-vbox").filter(has=page.locator(".widget-toggle-buttons")).first
    precision = panel.locator(".widget-toggle-buttons").filter(has_text="precision")
    precision.get_by_role("button", name="bf16", exact=True).click()
    run = panel.locator("button.widget-button.mod-success", has_text="Run")  # not "Run the 1-worker baseline"
    assert run.is_enabled(), "Run is disabled: the panel refused ddp x2 mlp bf16"
    run.click()
    _wait_for_finished_run(page, "bf16", steps=20)
    assert "bf16" in panel.locator(".widget-html").all_inner_texts()[-1], "status line names the run"
    panel.scroll_into_view_if_needed()
    panel.screenshot(path=artifacts / "01-quickstart-panel.png")
    page.screenshot(path=artifacts / "01-quickstart-page.png")

    _run_last_cell_to_stop(page)
    stop_output = str(page.evaluate(OUTPUTS)[-1]["outputs"])
    assert "closed 1 panel(s)" in stop_output, stop_output


def _wait_for_finished_run(page, named: str, steps: int) -> None:
    """Wait for the panel's loss figure to hold the finished run's line (the live line is named
    'running: ...'), whose name contains ``named``, with every one of its ``steps`` drawn."""
    page.wait_for_function(
        """([named, steps]) => Array.from(document.querySelectorAll('.js-plotly-plot')).some(gd =>
            gd.layout && gd.layout.title && gd.layout.title.text === 'Loss per step'
            && (gd.data || []).some(t => t.name && t.name.includes(named)
                                      && !t.name.startsWith('running') && t.x && t.x.length >= steps))""",
        arg=[named, steps], timeout=PANEL_RUN_S * 1000, polling=500,
    )


def _run_last_cell_to_stop(page) -> None:
    """Run the notebook's last cell (``%parakit stop``) and wait for what it says."""
    page.evaluate(RUN_LAST)
    page.wait_for_function(
        """() => { const nb = window.jupyterapp.shell.currentWidget;
                   const last = nb.content.widgets[nb.content.widgets.length - 1];
                   return JSON.stringify(last.model.outputs.toJSON()).includes('[parakit] stopped'); }""",
        timeout=60_000, polling=500,
    )


def _wait_until_rendered(page, timeout_s: float = 30.0) -> None:
    """Widgets render asynchronously; wait for 'Loading widget...' to go, then fail on any
    message that says something did not render."""
    page.wait_for_function(
        "() => !document.body.innerText.includes('Loading widget...')", timeout=timeout_s * 1000, polling=250,
    )
    text = page.locator("body").inner_text()
    failures = [m for m in RENDER_FAILURES if m in text]
    assert not failures, f"the page says: {failures}"


def test_chromium_lookup_prefers_the_environment(monkeypatch, tmp_path):
    fake = tmp_path / "my-chromium"
    monkeypatch.setenv("PARAKIT_CHROMIUM", str(fake))
    assert find_chromium() == str(fake)
    monkeypatch.delenv("PARAKIT_CHROMIUM")
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert find_chromium() is None
