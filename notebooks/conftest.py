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


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """Under nbval the notebooks' kernels draw no static SVG copies of figures: nbval compares no
    figure, and starting a browser in every kernel cost seconds per notebook. The committed
    outputs keep theirs (notebooks/execute.py draws them). Set before the kernel starts, which
    happens in the setup of a notebook's first cell; other tests are left as they are."""
    import os

    if item.path.suffix == ".ipynb" and item.path.is_relative_to(HERE):
        _GIVEN.setdefault("value", os.environ.get("PARAKIT_STATIC_FIGURES"))
        os.environ["PARAKIT_STATIC_FIGURES"] = "0"
    elif "value" in _GIVEN:  # back to what the suite was started with
        given = _GIVEN.pop("value")
        if given is None:
            os.environ.pop("PARAKIT_STATIC_FIGURES", None)
        else:
            os.environ["PARAKIT_STATIC_FIGURES"] = given


_GIVEN: dict[str, str | None] = {}
