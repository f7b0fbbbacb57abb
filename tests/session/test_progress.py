"""Progress is one line rewritten in place: a display updated through its id in a notebook,
a tqdm bar on a terminal's stderr, nothing where no one watches."""

from __future__ import annotations

import io

import pytest

from parakit.config.run import RunConfig
from parakit.session import progress as progress_module
from parakit.session.progress import ProgressPrinter, StatusLine


class Handle:
    def __init__(self, shown):
        self.shown = shown

    def update(self, bundle, raw=True):
        self.shown.append(("update", bundle["text/plain"]))


@pytest.fixture
def notebook(monkeypatch):
    """A notebook front end: displays are recorded instead of sent."""
    shown = []

    def display(bundle, raw=True, display_id=False):
        assert raw and display_id is True
        shown.append(("display", bundle["text/plain"]))
        return Handle(shown)

    monkeypatch.setattr(progress_module, "in_notebook", lambda: True)
    monkeypatch.setattr("IPython.display.display", display)
    monkeypatch.setattr(progress_module, "REDRAW_S", 0.0)
    return shown


class Terminal(io.StringIO):
    def isatty(self):
        return True


CONFIG = RunConfig(model="mlp", strategy="ddp", workers=2, steps=8, batch_size=16)


def test_in_a_notebook_a_run_is_one_output_that_ends_as_its_summary(notebook, capsys):
    printer = ProgressPrinter(CONFIG)
    for step in range(1, 9):
        printer({"step": step, "steps": 8, "loss": 2.0 / step})
    printer.done("ddp x2 mlp: 1234.5 samples/s, step 12.9 ms, loss 2.0000 -> 0.2500")
    kinds = [kind for kind, _ in notebook]
    assert kinds[0] == "display" and set(kinds[1:]) == {"update"}  # one output, updated in place
    assert notebook[1][1].startswith("ddp x2 mlp: step 2/8, loss 1.0000") and "ETA" in notebook[1][1]
    assert notebook[-1][1] == "ddp x2 mlp: 1234.5 samples/s, step 12.9 ms, loss 2.0000 -> 0.2500"
    assert capsys.readouterr().err == ""  # nothing on stderr, which JupyterLab paints pink


def test_starting_engines_is_one_line_too(notebook):
    line = StatusLine()
    line.show("starting 2 engine(s) on CPU ...", force=True)
    line.end("2 engine(s) ready on 1 host(s) in 8.1 s")
    assert notebook == [("display", "starting 2 engine(s) on CPU ..."), ("update", "2 engine(s) ready on 1 host(s) in 8.1 s")]


def test_on_a_terminal_a_tqdm_bar_that_leaves_nothing_behind(monkeypatch):
    monkeypatch.setattr(progress_module, "REDRAW_S", 0.0)
    stream = Terminal()
    printer = ProgressPrinter(CONFIG, stream=stream)
    for step in range(1, 9):
        printer({"step": step, "steps": 8, "loss": 0.5})
    drawn = stream.getvalue()
    assert "ddp x2 mlp" in drawn and "8/8" in drawn and "loss=0.5" in drawn
    printer.done("the summary")
    assert "the summary" not in stream.getvalue()  # the command prints it, on stdout
    assert stream.getvalue().endswith("\r") or stream.getvalue().endswith("\x1b[A")


def test_where_no_one_watches_nothing_is_written():
    stream = io.StringIO()  # a log file: not a terminal, not a notebook
    printer = ProgressPrinter(CONFIG, stream=stream)
    printer({"step": 1, "steps": 8, "loss": 1.0})
    printer.done("summary")
    assert stream.getvalue() == ""
