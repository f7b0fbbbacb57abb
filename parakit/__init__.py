"""parakit: see what parallel training does, in Jupyter, on your own hardware.

Names are imported on first use (PEP 562), so ``import parakit.engine...`` on an engine does
not pull in ipyparallel, and ``import parakit`` stays quick.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_PUBLIC = {
    "Panel": "parakit.frontends.panel",
    "Precision": "parakit.config.run",
    "GPU_ONLY_PRECISIONS": "parakit.config.levers",
    "Prices": "parakit.config.prices",
    "RunConfig": "parakit.config.run",
    "RunResult": "parakit.records.result",
    "advise": "parakit.advisor.advice",
    "compare": "parakit.records.intervals",
    "speedup_text": "parakit.records.intervals",
    "where_time_went": "parakit.records.explain",
    "Session": "parakit.session.session",
    "load_runs": "parakit.records.store",
    "read_runs": "parakit.records.store",
    "delete_run": "parakit.records.store",
    "read_comm_benches": "parakit.records.store",
}
# Subpackages a user reaches as attributes (``parakit.plots.speedup(runs)``), imported on first use.
_SUBPACKAGES = ("plots",)
__all__ = list(_PUBLIC) + list(_SUBPACKAGES)


def __getattr__(name: str):
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    if name in _SUBPACKAGES:
        return importlib.import_module(f"parakit.{name}")
    raise AttributeError(f"module 'parakit' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)


def load_ipython_extension(ipython) -> None:
    """``%load_ext parakit``: registers the ``%parakit`` line and cell magics."""
    from parakit.frontends.magics import load_ipython_extension as load

    load(ipython)


def unload_ipython_extension(ipython) -> None:
    """``%unload_ext parakit``: stops the engines, closes the panels, removes the magics."""
    from parakit.frontends.magics import unload_ipython_extension as unload

    unload(ipython)
