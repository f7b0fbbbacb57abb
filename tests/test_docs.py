"""The documentation site (mkdocs.yml, docs/hooks.py) builds in strict mode, from the committed
notebook outputs (nothing executed), with every page and every notebook figure; and strict mode
does fail on a broken link or anchor, so the first test passing means the links resolve."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PLOTLY = "application/vnd.plotly.v1+json"
IMAGES = ("image/svg+xml", "image/png")


def build(config: Path, site: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # the theme's banner, not the build's
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "--site-dir", str(site)],
        cwd=config.parent, env=env, capture_output=True, text=True, timeout=180,
    )


def outputs(notebook: Path) -> list[dict]:
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    return [o.get("data", {}) for c in cells for o in c.get("outputs", [])]


def test_site_builds_strict_with_every_page_and_figure(tmp_path):
    site = tmp_path / "site"
    done = build(ROOT / "mkdocs.yml", site)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log
    assert "execute=True" not in log  # the committed outputs are shown, never re-run

    home = (site / "index.html").read_text(encoding="utf-8")
    assert "parakit lets you" in home  # README.md is the home page
    docs = sorted((ROOT / "docs").glob("*.md"))
    assert docs
    for page in docs:
        assert (site / "docs" / page.stem / "index.html").is_file(), page.name
    assert (site / "notebooks" / "index.html").is_file()  # notebooks/README.md
    assert not (site / "docs" / "hooks.py").exists() and not (site / "docs" / "hooks").exists()

    notebooks = sorted((ROOT / "notebooks").glob("*.ipynb"))
    assert len(notebooks) >= 7
    figures = 0
    for notebook in notebooks:
        page = (site / "notebooks" / notebook.stem / "index.html").read_text(encoding="utf-8")
        data = outputs(notebook)
        interactive = sum(PLOTLY in d for d in data)
        # each plotly figure is drawn by plotly.js (bundled in the site), none left out
        assert page.count("Plotly.newPlot(") == interactive, notebook.name
        if interactive:
            assert '/assets/javascripts/plotly.min.js"></script>' in page, notebook.name
        static = sum(PLOTLY not in d and any(k in d for k in IMAGES) for d in data)
        if static:
            assert "<svg" in page or "data:image/png" in page, notebook.name
        figures += interactive + static
    assert figures > 0
    assert (site / "assets" / "javascripts" / "plotly.min.js").stat().st_size > 1_000_000


def test_strict_build_fails_on_a_broken_link_or_anchor(tmp_path):
    """The same config and hook on a copy of README.md and docs/ (the notebooks as empty
    stand-ins, to be quick: the pages link to them), with one more page: its good links pass,
    its broken link and anchor fail the build."""
    shutil.copy(ROOT / "mkdocs.yml", tmp_path / "mkdocs.yml")
    shutil.copy(ROOT / "README.md", tmp_path / "README.md")
    shutil.copytree(ROOT / "docs", tmp_path / "docs", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "notebooks").mkdir()
    shutil.copy(ROOT / "notebooks" / "README.md", tmp_path / "notebooks" / "README.md")
    empty = {"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    for notebook in (ROOT / "notebooks").glob("*.ipynb"):
        (tmp_path / "notebooks" / notebook.name).write_text(json.dumps(empty), encoding="utf-8")
    (tmp_path / "docs" / "broken.md").write_text(
        "# Broken\n\n[home](../README.md), [notebooks](../notebooks/README.md), "
        "[method](benchmarks.md#method), "
        "[gone](missing.md), [no anchor](advisor.md#no-such-section)\n",
        encoding="utf-8",
    )
    done = build(tmp_path / "mkdocs.yml", tmp_path / "site")
    log = done.stdout + done.stderr
    assert done.returncode != 0, log
    assert "strict mode" in log, log
    warnings = [line for line in log.splitlines() if line.startswith("WARNING")]
    assert any("'missing.md'" in w for w in warnings), log
    assert any("no-such-section" in w for w in warnings), log
    assert len(warnings) == 2, log  # the good links (up and out of docs/, an anchor elsewhere) pass


def test_notebooks_and_docs_use_only_the_public_api():
    """What a notebook or a page shows a user to type comes from ``parakit`` or ``parakit.plots``
    (parakit/__init__.py's ``__all__``), never from a module inside a layer."""
    import re

    inner = re.compile(r"from parakit\.(?!plots import)[\w.]+ import|\bparakit\.(?!plots\.)[a-z_]+\.[a-z_]+")
    found = []
    for notebook in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for cell in json.loads(notebook.read_text(encoding="utf-8"))["cells"]:
            source = "".join(cell["source"]) if cell["cell_type"] == "code" else ""
            found += [f"{notebook.name}: {line.strip()}" for line in source.splitlines() if inner.search(line)]
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        blocks = re.findall(r"```python\n(.*?)```", page.read_text(encoding="utf-8"), flags=re.S)
        found += [f"{page.name}: {line.strip()}" for block in blocks for line in block.splitlines() if inner.search(line)]
    assert found == []
