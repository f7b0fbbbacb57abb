"""Where parakit's code is running: a Jupyter kernel, or anywhere else (a terminal, a script).

It lives at the bottom so that every layer that decides how to show something (the progress
line in session/, figures in plots/, the CLI's text in frontends/) asks the one same question
without importing a layer above it. Standard library only.
"""

from __future__ import annotations

import sys


def in_notebook() -> bool:
    """True inside a Jupyter kernel (not merely when ipykernel is imported, as ipyparallel does)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython else None
    return type(shell).__name__ == "ZMQInteractiveShell"
