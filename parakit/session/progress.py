"""Progress of long work (starting engines, a run, a benchmark) as ONE line that is rewritten
in place, never a stream of lines:

- in a notebook, a display output updated through its display id (not stderr, which
  JupyterLab paints pink as if it were an error); it ends as the run's one-line summary, which
  is what the saved notebook keeps;
- in a terminal, a tqdm bar on stderr that is cleared at the end (the CLI prints the summary
  on stdout, so ``--json`` output stays pure);
- anywhere else (a log file, CI), nothing.
"""

from __future__ import annotations

import html
import sys
import time

from parakit.config.run import RunConfig
from parakit.config.shell import in_notebook
from parakit.records.result import run_label

REDRAW_S = 0.25  # at most four redraws a second: a display update is a message to the front end


def size_text(nbytes: float) -> str:
    """1024 -> '1 KB', 1048576 -> '1 MB' (binary multiples, as message sizes are given)."""
    for unit in ("B", "KB", "MB", "GB"):
        if nbytes < 1024 or unit == "GB":
            return f"{nbytes:g} {unit}"
        nbytes /= 1024
    return f"{nbytes:g} GB"


class StatusLine:
    """One line of output, rewritten in place where someone watches (see the module's doc)."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.notebook = in_notebook()
        self.terminal = not self.notebook and getattr(self.stream, "isatty", lambda: False)()
        self._handle = None
        self._width = 0
        self._drawn_at = 0.0

    @property
    def watched(self) -> bool:
        return self.notebook or self.terminal

    def show(self, text: str, bar: float | None = None, force: bool = False) -> None:
        """Draw ``text`` (and, in a notebook, a bar filled to ``bar`` in [0, 1])."""
        now = time.monotonic()
        if not self.watched or (not force and now - self._drawn_at < REDRAW_S):
            return
        self._drawn_at = now
        if self.notebook:
            self._display(text, bar)
        else:
            self._width = max(self._width, len(text))
            self.stream.write("\r" + text.ljust(self._width))
            self.stream.flush()

    def end(self, text: str | None) -> None:
        """The line's last state: ``text`` stays (a notebook keeps it in the saved output; a
        terminal gets it as a finished line), or None clears it."""
        if self.notebook:
            if text is not None or self._handle is not None:
                self._display(text or "", None)
        elif self.terminal:
            if self._width:
                self.stream.write(f"\r{' ' * self._width}\r")
            if text:
                self.stream.write(f"[parakit] {text}\n")
            self.stream.flush()

    def _display(self, text: str, bar: float | None) -> None:
        from IPython.display import display  # notebook side only

        shown = html.escape(text)
        if bar is not None:
            shown = (f"<progress value='{bar:.3f}' max='1' style='width:12em;vertical-align:middle'>"
                     f"</progress> {shown}")
        bundle = {"text/plain": text, "text/html": f"<div style='font-family:monospace'>{shown}</div>"}
        if self._handle is None:
            self._handle = display(bundle, raw=True, display_id=True)
        else:
            self._handle.update(bundle, raw=True)


def note(text: str) -> None:
    """A one-off status line (e.g. what a sweep runs next), where someone is watching."""
    line = StatusLine()
    line.end(text)


class ProgressPrinter:
    """Rank 0's progress as one line: a run's step, loss, samples/s, elapsed and ETA, or a
    benchmark's collective and message size. ``done`` leaves the run's summary."""

    def __init__(self, config: RunConfig | str, stream=None):
        self.line = StatusLine(stream)
        self.batch_size = None if isinstance(config, str) else config.batch_size
        # The run's one label (records.result.run_label), as its summary and every figure name it.
        self.label = config if isinstance(config, str) else run_label(config.describe(), config.workers)
        self.started = time.monotonic()
        self._bar = None
        self._first: tuple[int, float] | None = None  # (step, time) of the first progress seen

    def __call__(self, progress: dict) -> None:
        if not self.line.watched:
            return
        elapsed = time.monotonic() - self.started
        if "collective" in progress:
            done, total = progress["done"], progress["total"]
            text = f"{self.label}: {progress['collective']} {size_text(progress['bytes'])} ({done}/{total})"
            self._draw(text, done, total, elapsed, "size")
            return
        step, steps = progress.get("step", 0), progress.get("steps", 0)
        if self._first is None:
            self._first = (step, time.monotonic())
        text = f"{self.label}: step {step}/{steps}"
        if progress.get("loss") is not None:
            text += f", loss {progress['loss']:.4f}"
        rate = self._samples_per_s(step)
        if rate:
            text += f", {rate:.0f} samples/s"
        if progress.get("stragglers"):  # a recorded window named them (records/stragglers.py)
            text += f", straggler: rank {', '.join(map(str, progress['stragglers']))}"
        self._draw(text, step, steps, elapsed, "step", loss=progress.get("loss"), rate=rate)

    def _samples_per_s(self, step: int) -> float | None:
        """Samples/s since the first progress seen (set-up left out), for the line only."""
        if self.batch_size is None or self._first is None or step <= self._first[0]:
            return None
        return (step - self._first[0]) * self.batch_size / (time.monotonic() - self._first[1])

    def _draw(self, text: str, done: int, total: int, elapsed: float, unit: str, **postfix) -> None:
        share = done / total if total else None
        if self.line.terminal:
            self._tqdm(done, total, unit, postfix)
            return
        eta = f", ETA {elapsed / share - elapsed:.0f} s" if share and 0 < share < 1 else ""
        self.line.show(f"{text}, {elapsed:.1f} s{eta}", bar=share)

    def _tqdm(self, done: int, total: int, unit: str, postfix: dict) -> None:
        from tqdm import tqdm  # the terminal's bar

        if self._bar is None:
            self._bar = tqdm(total=total or None, desc=self.label, unit=unit, file=self.line.stream,
                             leave=False, dynamic_ncols=True, mininterval=REDRAW_S)
        self._bar.n = done
        shown = {k: f"{v:.4g}" for k, v in postfix.items() if v is not None}
        self._bar.set_postfix(shown, refresh=False)
        self._bar.refresh()

    def done(self, summary: str | None = None) -> None:
        """The run's end: its one-line summary stays in a notebook; a terminal's bar goes (the
        command prints the summary itself)."""
        if self._bar is not None:
            self._bar.close()
        self.line.end(summary if self.line.notebook else None)
