"""What the browser test needs around the browser: a Chromium to drive, a JupyterLab server of
its own (free port, token, private settings and root folder), a notebook copied without its
outputs, and the JavaScript that asks JupyterLab what it shows."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil

# Debian's package is `chromium`; the others are what other systems call it.
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--no-first-run",
]
SERVER_START_S = 60.0
# JupyterLab settings for a test: every cell in the DOM (no windowing, so an output below the
# fold is rendered and can be found), and no news or update pop-ups over the screenshot.
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false", "checkForUpdates": False,
    },
}


def find_chromium() -> str | None:
    """PARAKIT_CHROMIUM, else the first Chromium on PATH, else None."""
    given = os.environ.get("PARAKIT_CHROMIUM")
    if given:
        return given
    return next((path for path in map(shutil.which, CHROMIUM_NAMES) if path), None)


def artifacts_dir() -> Path:
    """Where screenshots and logs go: PARAKIT_ARTIFACTS, else tests/artifacts (git-ignored)."""
    folder = Path(os.environ.get("PARAKIT_ARTIFACTS") or Path(__file__).parent / "artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def copy_without_outputs(source: Path, target: Path) -> dict:
    """Copy a notebook with every output, execution count and widget state removed, so what
    the browser shows later can only come from running it now. Returns the notebook."""
    notebook = json.loads(source.read_text())
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
    notebook["metadata"].pop("widgets", None)
    target.write_text(json.dumps(notebook, indent=1))
    return notebook


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Lab:
    url: str
    token: str
    process: subprocess.Popen

    def page_url(self, notebook: str) -> str:
        # ?reset: a fresh workspace, so no layout from an earlier session reopens.
        return f"{self.url}/lab/tree/{notebook}?token={self.token}&reset"


@contextlib.contextmanager
def jupyter_lab(root: Path, log_path: Path) -> Iterator[Lab]:
    """JupyterLab on 127.0.0.1 with its own token, config, settings and runtime folders under
    ``root``'s parent; stopped (kernels, and every process they started) on exit."""
    home = root.parent / "lab-home"
    settings = home / "settings"
    for name, values in LAB_SETTINGS.items():
        path = settings / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    port, token = _free_port(), secrets.token_hex(16)
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(home / "config"),
           "JUPYTER_RUNTIME_DIR": str(home / "runtime"), "IPYTHONDIR": str(home / "ipython")}
    command = [
        sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}", f"--LabApp.user_settings_dir={settings}",
        f"--LabApp.workspaces_dir={home / 'workspaces'}", "--LabApp.expose_app_in_browser=True",
    ]
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root)
        try:
            lab = Lab(f"http://127.0.0.1:{port}", token, process)
            _wait_until_up(lab)
            yield lab
        finally:
            _stop(process)


def _wait_until_up(lab: Lab) -> None:
    deadline = time.monotonic() + SERVER_START_S
    while True:
        if lab.process.poll() is not None:
            raise RuntimeError(f"JupyterLab exited with code {lab.process.returncode}; see its log")
        try:
            with urllib.request.urlopen(f"{lab.url}/api/status?token={lab.token}", timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"JupyterLab did not answer within {SERVER_START_S:.0f} s") from None
            time.sleep(0.25)


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM the server (it shuts its kernels down), then end whatever it started that is
    still there: the processes this test started, by pid."""
    try:
        started = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        started = []
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    _, alive = psutil.wait_procs(started, timeout=10)
    for leftover in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            leftover.kill()


# -- what JupyterLab shows, asked through window.jupyterapp (expose_app_in_browser) ---------
NOTEBOOK = "window.jupyterapp && window.jupyterapp.shell.currentWidget"

KERNEL_IDLE = f"""() => {{
    const nb = {NOTEBOOK};
    const kernel = nb && nb.sessionContext && nb.sessionContext.session && nb.sessionContext.session.kernel;
    return !!kernel && kernel.status === 'idle';
}}"""

RUN_ALL_ABOVE_LAST = f"""async () => {{
    const nb = {NOTEBOOK};
    nb.content.activeCellIndex = nb.content.widgets.length - 1;
    await window.jupyterapp.commands.execute('notebook:run-all-above');
}}"""

RUN_LAST = f"""async () => {{
    const nb = {NOTEBOOK};
    nb.content.activeCellIndex = nb.content.widgets.length - 1;
    await window.jupyterapp.commands.execute('notebook:run-cell');
}}"""

# Every code cell but the last has run (an execution count) and the kernel is idle again.
ABOVE_LAST_DONE = f"""() => {{
    const nb = {NOTEBOOK};
    const kernel = nb.sessionContext.session && nb.sessionContext.session.kernel;
    const cells = nb.content.widgets.slice(0, -1).filter(c => c.model.type === 'code');
    return kernel && kernel.status === 'idle' && cells.every(c => c.model.executionCount !== null);
}}"""

# Each code cell's outputs as nbformat JSON: what the kernel sent, whatever the page drew.
OUTPUTS = f"""() => {{
    const nb = {NOTEBOOK};
    return nb.content.widgets.filter(c => c.model.type === 'code')
        .map(c => ({{source: c.model.sharedModel.getSource(), outputs: c.model.outputs.toJSON()}}));
}}"""

# The plotly figures the page drew: title, whether a widget (the panel's FigureWidgets) or an
# output (a figure's own MIME type) holds it, and whether plotly.js drew its SVG.
FIGURES = """() => Array.from(document.querySelectorAll('.js-plotly-plot')).map(gd => ({
    title: gd.layout && gd.layout.title ? (gd.layout.title.text || '') : '',
    in_widget: !!gd.closest('.jupyter-widgets'),
    drawn: !!gd.querySelector('.main-svg'),
}))"""
