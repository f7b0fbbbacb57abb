"""The engines' training code, imported before the first run asks for it, and reached without
the notebook importing it.

Importing torch and parakit's training code costs an engine 2-3 s of CPU, most of a cold
start's first run on 2 cores. ``start`` imports it in a background thread while the engine has
nothing else to do: a CPU engine as it starts (it then waits a heartbeat or two for the
controller to finish registering it), an engine that may get a GPU once it is pinned (before,
anything that asked CUDA for its devices would fix them before CUDA_VISIBLE_DEVICES is set).

``train`` is a run's entry point by name: the notebook ships this function, whose module needs
no torch, so the notebook never imports torch to start a run; the engine imports the real one,
at once if ``start`` has done so (or once that import has ended).
"""

from __future__ import annotations

import threading
from typing import Any

_LOADING: list[threading.Thread] = []  # the one import thread, once started
_STARTING = threading.Lock()

ON_START = "__import__('parakit.engine.preload', fromlist=['start']).start()"
"""The engine's startup command (``IPEngine.startup_command``) that calls ``start``; it runs in
the engine's namespace and leaves no name there."""


def start() -> None:
    """Import the training code in a background thread, once per engine; returns at once."""
    with _STARTING:
        if not _LOADING:
            _LOADING.append(threading.Thread(target=_load, name="parakit-preload", daemon=True))
            _LOADING[0].start()


def _load() -> None:
    try:
        import parakit.engine.train  # noqa: F401 - imported for the run to come (torch with it)
    except Exception:  # noqa: BLE001 - the run that needs it imports it again, and reports why it fails
        pass


def call(module: str, name: str, *args: Any) -> Any:
    """``module.name(*args)``, imported on the engine once the background import has ended.

    Why by name: a function shipped by reference is imported as it is unpickled, in the
    engine's main thread, while the background thread may be importing the same parakit
    modules; two threads importing one module can hand one of them the module half made
    ("cannot import name ... from partially initialized module"). This module is imported
    already, so shipping ``call`` imports nothing until the background import is over."""
    import importlib

    wait()
    return getattr(importlib.import_module(module), name)(*args)


def wait() -> None:
    """Until the background import has ended (done, or failed and undone); at once without one."""
    for loading in _LOADING:
        loading.join()


def train(*args: Any) -> Any:
    """``parakit.engine.train.train(*args)``, imported here, on the engine."""
    # Its import done, or failed and undone: the import below then finds the module whole,
    # or imports it again and says why it fails, not a half-made module's missing name.
    wait()
    from parakit.engine.train import train as run

    return run(*args)
