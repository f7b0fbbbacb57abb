"""Progress from an engine to the notebook, through ipyparallel's data publication: the
client reads the latest message from the task's AsyncResult while the task runs."""

from __future__ import annotations

from typing import Any


def publish(progress: dict[str, Any]) -> None:
    """Send ``progress`` (plain data) to the client; a no-op outside an engine (a plain script,
    a test process), where there is no one to tell."""
    try:
        from ipykernel.zmqshell import ZMQInteractiveShell
        from ipyparallel.datapub import publish_data

        if not ZMQInteractiveShell.initialized():
            return  # not an engine: publish_data would make a shell here, which later IPython use trips on
        publish_data(progress)
    except Exception:  # noqa: BLE001 - progress is best effort; training must not stop for it
        pass
