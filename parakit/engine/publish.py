"""Progress from an engine to the notebook, through ipyparallel's data publication: the
client reads the latest message from the task's AsyncResult while the task runs."""

from __future__ import annotations

import time
from typing import Any

from parakit.config.run import RunConfig


def publish(progress: dict[str, Any]) -> bool:
    """Send ``progress`` (plain data) to the client; a no-op outside an engine (a plain script,
    a test process), where there is no one to tell.

    Returns:
        False when the message could not be sent (the engine's connection to the client
        failed): progress is best effort, and training must not stop for it.
    """
    try:
        from ipykernel.zmqshell import ZMQInteractiveShell
        from ipyparallel.datapub import publish_data

        if not ZMQInteractiveShell.initialized():
            return True  # not an engine: publish_data would make a shell here, which later IPython use trips on
        publish_data(progress)
    except Exception:  # noqa: BLE001 - best effort: the caller counts the failure
        return False
    return True


class Publisher:
    """Sends a run's progress messages and counts those that failed, so the run's record can
    say that its live view missed some (``RankReport.progress_failures``)."""

    def __init__(self) -> None:
        self.failures = 0

    def send(self, progress: dict[str, Any]) -> None:
        if not publish(progress):
            self.failures += 1


def progress(config: RunConfig, step: int, loss, device, meter, profiler) -> dict[str, Any]:
    """Rank 0's message after ``step``: the count (and when it was sent: engines and notebook
    share a clock on one host), plus, for a live run, what a live view draws."""
    message = {"step": step + 1, "steps": config.steps, "wall_time_s": time.time()}
    if (stragglers := profiler.stragglers()):  # a recorded window named one: the status line says so
        message["stragglers"] = stragglers
    if config.live:
        # On a CPU .item() is free; on a GPU it would sync, so only the count goes.
        value = loss.item() if loss is not None and device.type == "cpu" else None
        message.update(loss=value, power=meter.latest(), breakdown=profiler.latest())
    return message
