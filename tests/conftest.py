"""Shared fixtures. Distributed tests run for real on CPU engines with gloo.

Starting two engines costs ~9 s on a 2-core machine, so the modules that use ``session`` share
one: each module gets it with a fresh run store and as a fresh session would be (2 healthy
engines, the default auto_restart and hang timeout); a module that left it otherwise (more
engines, a dead one, runs refused until restart) gets a new one instead."""

from __future__ import annotations

import pytest

DEFAULTS = {"auto_restart": True, "hang_timeout_s": 120.0}


def _start(runs):
    import parakit

    return parakit.Session(workers=2, device="cpu", runs_dir=runs, progress=False)


@pytest.fixture(scope="session")
def _engines_for_modules():
    holder = {}
    yield holder
    if holder.get("session") is not None:
        holder["session"].close()


@pytest.fixture(scope="module")
def session(_engines_for_modules, tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    shared = _engines_for_modules.get("session")
    if shared is not None and (shared.workers != 2 or shared._broken or shared.busy or shared._engines.dead()):
        shared.close()
        shared = None
    if shared is None:
        shared = _engines_for_modules["session"] = _start(runs)
    shared.runs_dir = runs
    for name, value in DEFAULTS.items():
        setattr(shared, name, value)
    yield shared
