"""The example notebooks under pytest: nbval runs each one top to bottom (``--nbval-lax``: every
cell must run, and the notebooks' own assert cells check what they teach). They are marked
``slow``, like the browser test, so ``-m slow`` runs them alone and ``-m "not slow"`` skips them."""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).parent


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.path.suffix == ".ipynb" and item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.slow)
