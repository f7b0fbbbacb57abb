"""Shared fixtures. Distributed tests run for real on CPU engines with gloo; one cluster per
test module, since starting engines costs seconds on a 2-core machine."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    import parakit

    runs = tmp_path_factory.mktemp("runs")
    with parakit.Session(workers=2, device="cpu", runs_dir=runs, progress=False) as s:
        yield s
