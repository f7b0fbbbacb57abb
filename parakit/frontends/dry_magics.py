"""The ``%parakit`` magics of a notebook's dry run (``parakit preflight``): the real ones, with
the same parsing and the same checks, behind a ``DrySession`` that starts no engine.

Each ``%parakit`` line is one request in the dry run's ``CheckLog``, with the line as the
notebook expanded it. Four subcommands read or draw what earlier runs measured, which a dry
run has not: ``plot``, ``runs``, ``trace`` and ``panel`` parse their options here and return
nothing to draw (an empty runs frame), rather than refuse for an empty run store.
"""

from __future__ import annotations

from collections.abc import Callable

from IPython.core.error import UsageError
from IPython.core.magic import line_cell_magic, magics_class

from parakit.frontends.dry_session import CheckLog
from parakit.frontends.magic_options import checked
from parakit.frontends.magics import ParakitMagics
from parakit.frontends.magics_runs import RunMagics
from parakit.frontends.magics_store import StoreMagics
from parakit.plots.runs import PLOTS
from parakit.records.store import runs_frame


def _options_of(real: Callable) -> Callable[[Callable], Callable]:
    """Give a stand-in the real subcommand's parser (``-h``, and its errors' "see: ..." name)."""
    def give(stand_in: Callable) -> Callable:
        stand_in.parser, stand_in.__doc__ = real.parser, real.__doc__
        return stand_in
    return give


@magics_class
class DryMagics(ParakitMagics):
    """``%parakit`` for a dry run: every line checked and logged, nothing started or measured."""

    def __init__(self, shell, log: CheckLog):
        super().__init__(shell)
        self.log = log

    @line_cell_magic
    def parakit(self, line: str, cell: str | None = None):
        """The real magic, its line written to the log with the preflight's answer."""
        text = f"%%parakit {line}" if cell is not None else f"%parakit {line}"
        with self.log.request(text.strip()):
            return ParakitMagics.parakit(self, line, cell)

    @_options_of(StoreMagics._plot)
    def _plot(self, rest: str) -> None:
        args = self._parse(StoreMagics._plot, rest)
        if args.kind.replace("-", "_") not in PLOTS:
            raise UsageError(f"no plot {args.kind!r}; available: {', '.join(PLOTS)}")

    @_options_of(StoreMagics._runs)
    def _runs(self, rest: str):
        args = self._parse(StoreMagics._runs, rest)
        return None if args.delete else runs_frame([])

    @_options_of(RunMagics._trace)
    def _trace(self, rest: str) -> list[str]:
        self._parse(RunMagics._trace, rest)
        return []

    @_options_of(RunMagics._panel)
    def _panel(self, rest: str) -> None:
        args = self._parse(RunMagics._panel, rest)
        with checked:
            self._own_models(args.model or [], args.data, args.loss)
        self._session()  # a panel starts the default engines when none run, checked as they are
