"""The controller's end during a run: seen at once, said in one line, and the engines ended.

ipyparallel's controller (with its schedulers) carries every task and every result between
the client and the engines. When it ends mid-run (killed, out of memory), the ranks train on,
but nothing they send arrives: their progress stands still, their results never come, a stop
request never reaches them, and new engines cannot register with it. Before this, the run was
declared hung only after ``hang_timeout_s``, and replacing the engines then waited 120 s for a
registration that could not happen.

So the watch asks, every poll, whether the controller's process still runs (a local cluster:
its pid is the launcher's); when it has ended, the run's engines are ended (SIGKILL: they can
serve no one) and the run ends failed, saying the last step rank 0 reported (the steps'
measurements were in the results that cannot come). The session then
starts a new controller and new engines (``Session`` via ``session/repair.py``).
"""

from __future__ import annotations

import contextlib
import os
import signal

from parakit.cluster.engines import EngineSet
from parakit.cluster.placement import EngineInfo
from parakit.cluster.watchdog import start_time


def controller_pid(engines: EngineSet) -> int | None:
    """The controller's pid where this session started it (a local cluster), else None."""
    cluster = engines._cluster  # private: EngineSet keeps its ipyparallel Cluster to itself
    launcher = getattr(cluster, "controller", None)
    pid = getattr(launcher, "pid", None)
    return pid if isinstance(pid, int) and pid > 0 else None


def controller_alive(engines: EngineSet) -> bool:
    """False only when this session's controller process is known to have ended."""
    pid = controller_pid(engines)
    return pid is None or start_time(pid) is not None


def end_if_controller_lost(engines: EngineSet, ranked: list[EngineInfo], seen: dict | None) -> str | None:
    """When the controller has ended: SIGKILL the run's engines and return the run's error in
    one line (with the last progress rank 0 reported); None while it runs."""
    if controller_alive(engines):
        return None
    for engine in ranked:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(engine.pid, signal.SIGKILL)
    step = f" at step {seen['step']} of {seen['steps']}" if seen and seen.get("step") else ""
    return (f"the controller (pid {controller_pid(engines)}) ended during the run{step}; the ranks' results "
            "could not come back, and a new controller and engines are started")
