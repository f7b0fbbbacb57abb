"""Where an engine's Python threads are, on request: what a hung run needs to say which rank
did not arrive. SIGUSR1 makes faulthandler write every thread's stack to a file, from C, so it
works while the training thread is blocked inside a collective, where no Python code runs. The
same folder holds each engine's FIFO for its last collectives (engine.flight_recorder)."""

from __future__ import annotations

import faulthandler
import os
import signal

from parakit.engine import flight_recorder

_FILES: list = []  # kept open for the process's life: faulthandler writes to the descriptor


def enable_stack_dumps(folder: str) -> str:
    """Dump all threads' stacks to ``folder/stack-<pid>.txt`` on SIGUSR1, and answer requests
    for the last collectives (``flight_recorder.listen``); returns the stacks' path."""
    path = os.path.join(folder, f"stack-{os.getpid()}.txt")
    f = open(path, "w")  # noqa: SIM115 - must outlive this call
    os.chmod(path, 0o600)
    _FILES.append(f)
    faulthandler.register(signal.SIGUSR1, file=f, all_threads=True, chain=False)
    # SIGUSR2 asks a training run to end for a switch (engine.stopping); between runs it must
    # be ignored, not end the engine as its default action would.
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    flight_recorder.listen(folder)
    # A fatal signal (gloo aborts a rank that receives more than it expects: a collective
    # mismatch) writes the dying engine's stacks here too; ipyparallel's log of it goes with it.
    faulthandler.enable(file=f, all_threads=True)
    return path

