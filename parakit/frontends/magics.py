"""``%load_ext parakit``: the ``%parakit`` line magic and the ``%%parakit`` cell magic.

Thin, as ipyparallel's ``client/magics.py``: each subcommand parses its options with
``magic_arguments`` and hands the work to the Session, the plot functions or the run store, so
the CLI, the panel and the magics share it. A mistake in the input is an IPython UsageError of
one line that names the fix, raised before any engine is started or touched. The subcommands
live in magics_engines.py (start, restart, stop, status), magics_runs.py (run, trace, sweep,
panel, the cell magic) and magics_store.py (plot, runs, bench, advise).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError
from IPython.core.magic import line_cell_magic, magics_class

from parakit.frontends.magics_engines import DEFAULT_START
from parakit.frontends.magics_runs import RankErrors, RunMagics
from parakit.frontends.magics_store import StoreMagics
from parakit.plots.runs import PLOTS
from parakit.records.store import DEFAULT_RUNS_DIR

if TYPE_CHECKING:
    from parakit.frontends.panel import Panel
    from parakit.session.session import Session

__all__ = ["DEFAULT_START", "ParakitMagics", "RankErrors", "load_ipython_extension", "unload_ipython_extension"]


@magics_class
class ParakitMagics(RunMagics, StoreMagics):
    """The ``%parakit`` magics; one session (set of engines) per IPython shell."""

    def __init__(self, shell=None):
        super().__init__(shell)
        self.session: Session | None = None
        self.panels: list[Panel] = []
        self._engine_settings: dict[str, Any] = {}
        self._runs_dir = DEFAULT_RUNS_DIR
        self._subcommands: dict[str, Callable[[str], Any]] = {
            "start": self._start, "status": self._status, "stop": self._stop,
            "restart": self._restart, "run": self._run, "sweep": self._sweep,
            "panel": self._panel, "plot": self._plot, "runs": self._runs, "bench": self._bench,
            "advise": self._advise, "trace": self._trace, "fit": self._fit, "switch": self._switch,
        }

    @line_cell_magic
    def parakit(self, line: str, cell: str | None = None):
        """Parallel training on local engines, from a notebook.

        ``%parakit SUBCOMMAND [options]``; ``%parakit SUBCOMMAND -h`` lists its options. With
        no engines yet, a subcommand that needs them starts them with the defaults (one per
        GPU, else 2 on CPU) and says so; ``%parakit`` alone does that and shows them.

        Subcommands::

            In [1]: %parakit start -n 2 --cpu        # engines (or --gpus 0,1)
            In [2]: %parakit status                  # engines, devices, pids, memory
            In [3]: %parakit run --strategy ddp --workers 2 --model gpt --steps 20
            In [4]: %parakit sweep --workers 1,2 --strategy ddp --precision fp32,bf16
            In [5]: %parakit panel                   # the control panel
            In [6]: %parakit plot speedup --last 4   # KINDS
            In [7]: %parakit runs --last 10          # the run store as a DataFrame
            In [8]: %parakit bench comm --sizes 1KB,1MB,16MB   # collectives: time, busbw
            In [9]: %parakit advise --model gpt --workers 2 --verify   # predict, rank, measure
            In [9]: %parakit fit --model gpt --memory-limit 64MB --strategies ddp,fsdp  # what fits
            In [10]: %parakit restart -n 4           # new engines (these stop)
            In [11]: %parakit stop                   # stop every engine

        As a cell magic (``%%parakit [-n N]``), runs the cell on every engine (or the first
        N) with the process group formed and ``rank``, ``world_size`` and ``device``
        defined; output is grouped by rank::

            In [10]: %%parakit
                ...: import torch, torch.distributed as dist
                ...: t = torch.ones(1, device=device) * (rank + 1)
                ...: dist.all_reduce(t)
                ...: print(t.item())
        """
        if cell is not None:
            return self._cell(line, cell)
        name, _, rest = line.strip().partition(" ")
        if not name:
            return self._status("", start=True)
        if name not in self._subcommands:
            raise UsageError(f"unknown subcommand {name!r}; use one of: {', '.join(self._subcommands)}")
        handler = self._subcommands[name]
        if rest.strip() in ("-h", "--help"):
            print(handler.parser.format_help())
            return None
        return handler(rest)


def load_ipython_extension(ipython) -> None:
    """Register the magics; ``%load_ext parakit`` calls this."""
    ipython.register_magics(ParakitMagics)


def unload_ipython_extension(ipython) -> None:
    """``%unload_ext parakit``: stop the engines and close the panels, then drop the magics."""
    magics = ipython.magics_manager.registry.get("ParakitMagics")
    if magics is not None and magics.session is not None:
        magics._stop("")
    for table in ipython.magics_manager.magics.values():
        table.pop("parakit", None)
    ipython.magics_manager.registry.pop("ParakitMagics", None)


# The plot kinds in the docs come from PLOTS, so a new kind is documented where it is added.
ParakitMagics.parakit.__doc__ = ParakitMagics.parakit.__doc__.replace("KINDS", ", ".join(PLOTS))
