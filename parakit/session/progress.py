"""A one-line progress display for long runs, updated in place.

It writes to stderr with a carriage return, which both terminals and Jupyter's stream output
redraw in place; where neither is attached (a log file, CI), it stays quiet.
"""

from __future__ import annotations

import sys
import time

from parakit.config.run import RunConfig


def in_notebook() -> bool:
    """True inside a Jupyter kernel (not merely when ipykernel is imported, as ipyparallel does)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython else None
    return type(shell).__name__ == "ZMQInteractiveShell"


def note(text: str, stream=None) -> None:
    """A one-off status line (e.g. engines starting), where someone is watching."""
    stream = stream or sys.stderr
    if in_notebook() or getattr(stream, "isatty", lambda: False)():
        stream.write(f"[parakit] {text}\n")
        stream.flush()


def size_text(nbytes: float) -> str:
    """1024 -> '1 KB', 1048576 -> '1 MB' (binary multiples, as message sizes are given)."""
    for unit in ("B", "KB", "MB", "GB"):
        if nbytes < 1024 or unit == "GB":
            return f"{nbytes:g} {unit}"
        nbytes /= 1024
    return f"{nbytes:g} GB"


class ProgressPrinter:
    """Rank 0's progress as one line: a run's step and loss, or a benchmark's collective and
    message size."""

    def __init__(self, config: RunConfig | str, stream=None):
        self.stream = stream or sys.stderr
        self.live = in_notebook() or getattr(self.stream, "isatty", lambda: False)()
        if isinstance(config, str):
            self.label = config
        else:
            model = config.model if isinstance(config.model, str) else "own model"
            self.label = f"{config.strategy.value} x{config.workers} {model}"
        self.started = time.monotonic()
        self.width = 0

    def __call__(self, progress: dict) -> None:
        if not self.live:
            return
        if "collective" in progress:
            text = (f"[parakit] {self.label}: {progress['collective']} {size_text(progress['bytes'])}"
                    f" ({progress['done']}/{progress['total']})")
        else:
            step, steps = progress.get("step", 0), progress.get("steps", 0)
            loss = progress.get("loss")
            text = f"[parakit] {self.label}: step {step}/{steps}"
            if loss is not None:
                text += f"  loss {loss:.4f}"
        text += f"  {time.monotonic() - self.started:.1f} s"
        self.width = max(self.width, len(text))
        self.stream.write("\r" + text.ljust(self.width))
        self.stream.flush()

    def done(self, status: str) -> None:
        if self.live and self.width:
            self.stream.write(f"\r{' ' * self.width}\r")
            self.stream.flush()
