"""Re-execute the example notebooks in place, so their committed outputs are fresh and each
figure carries its static SVG copy beside plotly's JSON (GitHub, nbviewer and nbconvert's HTML
show only the copy).

    python notebooks/execute.py                    # every notebooks/*.ipynb, in name order
    python notebooks/execute.py 01-quickstart 05   # some of them (a name, its start, or a path)

Each notebook runs top to bottom in a fresh ``python3`` kernel, from this folder (where it
writes ``parakit-runs/``), at most 600 s a cell. A notebook is written only when every cell ran
and every figure has its copy, and then atomically (a temporary file renamed over it), so a
failure leaves the committed file as it was; the first failure stops the script (exit code 1).

Widget state is not stored: it would embed plotly.js, ~5 MB per figure widget.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbconvert.preprocessors import ExecutePreprocessor

HERE = Path(__file__).resolve().parent
CELL_TIMEOUT_S = 600
PLOTLY = "application/vnd.plotly.v1+json"
STATIC = ("image/svg+xml", "image/png")


class NotebookFailed(Exception):
    """A notebook that could not be refreshed; the message says which and why."""


def notebooks(names: list[str]) -> list[Path]:
    """The notebooks named (a path, a file name here, or the start of one), or all of them."""
    if not names:
        return sorted(HERE.glob("*.ipynb"))
    found = []
    for name in names:
        path = Path(name)
        matches = [path] if path.is_file() else sorted(HERE.glob(f"{path.name.removesuffix('.ipynb')}*.ipynb"))
        if not matches:
            raise NotebookFailed(f"no notebook {name!r} in {HERE}")
        found += [m.resolve() for m in matches if m.resolve() not in found]
    return found


def figures_without_copy(nb: nbformat.NotebookNode) -> list[int]:
    """1-based numbers of the cells with a plotly figure output that has no static image."""
    return [i for i, cell in enumerate(nb.cells, 1) for out in cell.get("outputs", [])
            if PLOTLY in out.get("data", {}) and not any(m in out["data"] for m in STATIC)]


def execute(path: Path) -> float:
    """Run ``path`` and write it back; returns the seconds it took."""
    nb = nbformat.read(path, as_version=4)
    runner = ExecutePreprocessor(timeout=CELL_TIMEOUT_S, kernel_name="python3", store_widget_state=False)
    current = {"index": None}
    runner.on_cell_execute = lambda cell, cell_index: current.update(index=cell_index)
    start = time.perf_counter()
    try:
        runner.preprocess(nb, {"metadata": {"path": str(path.parent)}})
    except Exception as e:  # a cell's error, a timeout, a dead kernel: all stop the script
        where = _cell_text(nb, current["index"])
        why = f"{e.ename}: {e.evalue}" if hasattr(e, "ename") else f"{type(e).__name__}: {e}"
        raise NotebookFailed(f"{path.name}: {where} failed: {(why.strip().splitlines() or ['?'])[0]}") from None
    if missing := figures_without_copy(nb):
        raise NotebookFailed(f"{path.name}: the figures of cells {missing} have no static copy "
                             "(is Chromium or Chrome installed? is PARAKIT_STATIC_FIGURES=0 set?)")
    _write_atomically(nb, path)
    return time.perf_counter() - start


def _cell_text(nb: nbformat.NotebookNode, index: int | None) -> str:
    if index is None:
        return "starting the kernel"
    first = next((line for line in nb.cells[index].source.splitlines() if line.strip()), "")
    return f"cell {index + 1} ({first[:60]!r})"


def _write_atomically(nb: nbformat.NotebookNode, path: Path) -> None:
    # a renamed temporary file in the same folder: an interrupted write never leaves half a notebook
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=".ipynb")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            nbformat.write(nb, f)
        os.chmod(tmp, path.stat().st_mode & 0o777)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv: list[str]) -> int:
    try:
        paths = notebooks(argv)
    except NotebookFailed as e:
        print(e, file=sys.stderr)
        return 2
    try:
        for i, path in enumerate(paths, 1):
            seconds = execute(path)  # ~1 min each on a 2-core CPU
            print(f"[{i}/{len(paths)}] {path.name}: {seconds:.0f} s, {path.stat().st_size / 1024:.0f} KB",
                  flush=True)
    except NotebookFailed as e:
        print(f"{e}; that notebook is left as it was", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
