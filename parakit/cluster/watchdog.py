"""Stops a session's engines and controller when the process that started them is gone.

A kernel killed by the OOM killer, or SIGKILLed, runs no ``atexit``: without this its engines
go on training at full speed and its controller stays up, for ever. ``EngineSet.start`` starts
one watchdog per cluster, in its own session (so a signal to the kernel's group spares it):

    python -m parakit.cluster.watchdog CLIENT_PID CLIENT_START FOLDER

It checks every second; when the cluster's folder is gone the session closed normally and it
exits; when the client (same pid and start time, so a reused pid is not mistaken for it) is
gone, it kills every process of the cluster and removes the folder.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time

from parakit.cluster import netns

POLL_S = 1.0


def start_time(pid: int) -> str | None:
    """The process's start time in clock ticks (/proc/PID/stat field 22), or None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] in ("Z", "X") else fields[19]


def main(argv: list[str]) -> int:
    client, started, folder = int(argv[0]), argv[1], argv[2]
    while os.path.isdir(folder):
        if start_time(client) != started:
            stop(folder)
            return 0
        time.sleep(POLL_S)
    return 0


def stop(folder: str) -> None:
    """SIGKILL every process started for this cluster (ipyparallel puts the cluster's folder in
    the environment of the controller, its schedulers, the engines and their nannies), then
    remove the link's namespace, if any, and the folder. Nothing in them is worth a graceful stop:
    their client is gone."""
    me, marker = os.getpid(), folder.encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                ours = marker in f.read()
            if ours:
                os.kill(int(entry), signal.SIGKILL)
        except OSError:
            pass
    try:  # a link's second host (network namespace) goes too
        with open(os.path.join(folder, "netns")) as f:
            netns.remove(f.read().strip())
    except OSError:  # no link (no file), or no `ip` left to remove it with
        pass
    shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
