"""What every benchmark row names besides its figure: the machine, the date, and whether the
machine was quiet enough to trust a timing (a 2-core VM shared with a test run is not)."""

from __future__ import annotations

import datetime
import os
import platform

from parakit.config.hosts import usable_cores
from parakit.engine.devices import cpu_name


def cpu_model() -> str:
    return cpu_name()


def describe() -> str:
    """E.g. '2-core AMD EPYC, no GPU, Python 3.11, torch 2.13.0+cpu'."""
    import torch

    cores = usable_cores()
    gpu = (f"{torch.cuda.device_count()}x {torch.cuda.get_device_name(0)}"
           if torch.cuda.is_available() else "no GPU")
    return (f"{cores}-core {cpu_model()}, {gpu}, Python {platform.python_version()}, "
            f"torch {torch.__version__}")


def today() -> str:
    return datetime.date.today().isoformat()


def processes_cpu_s(leave_out: set[int] | frozenset[int] = frozenset()) -> float:
    """User + system CPU seconds of this process and every process under it (a session's
    engines, controller, nannies, watchdog), except the pids in ``leave_out``."""
    import psutil

    me = psutil.Process()
    total = 0.0
    for p in [me, *me.children(recursive=True)]:
        if p.pid in leave_out:
            continue
        try:
            t = p.cpu_times()
        except psutil.Error:  # gone meanwhile
            continue
        total += t.user + t.system
    return total


def load_note() -> str | None:
    """A warning when other processes keep the cores busy: the 1-minute load average against
    the core count (Linux / macOS), or None when the machine looks quiet."""
    try:
        load = os.getloadavg()[0]
    except OSError:
        return None
    cores = os.cpu_count() or 1
    if load > 0.5 * cores:
        return f"machine busy: load average {load:.1f} on {cores} cores before the benchmark"
    return None
