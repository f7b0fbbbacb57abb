"""Each rank's last collectives, from torch's Flight Recorder, readable while the rank is hung.

torch 2.13 records every collective of a gloo (and NCCL) process group in a ring buffer: the
process group, its sequence number, the op, the input sizes and dtypes, and whether the work
has retired (completed). For gloo it is on by default with 2000 entries; the size is read once
per process, from ``TORCH_FR_BUFFER_SIZE`` (or ``TORCH_NCCL_TRACE_BUFFER_SIZE``), when the
first group is made. ``turn_on`` sets it before parakit's first group unless the user set it
(0 turns it off), so gloo and NCCL record alike.

A rank blocked inside a collective runs no Python on its main thread, and ipyparallel cannot
reach it either. So ``listen`` starts one thread per engine that waits, at no cost, in the
``open`` of a FIFO in the cluster's folder; a write to the FIFO (``request``, from the client)
makes it write the rank's last collectives as JSON beside it. gloo waits with the GIL
released, so the thread answers while the rank is stuck.

The cost: torch captures each collective's Python stack (its ``frames``), a few microseconds
per collective (docs/benchmarks.md, ``benchmarks/flight_recorder_cost.py``).
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from dataclasses import dataclass

from parakit.engine.state import STATE

ENTRIES = 2000
"""Ring size when the user set none: torch 2.13's own default for gloo."""
VARIABLES = ("TORCH_FR_BUFFER_SIZE", "TORCH_NCCL_TRACE_BUFFER_SIZE")
KEPT = 16
"""Collectives sent back per rank: the last ones, enough to see where each rank stopped."""


@dataclass(frozen=True)
class Collective:
    """One collective as a rank's recorder saw it."""

    group: str
    """The process group's name ("0" for the default group; subgroups have their own)."""
    seq: int
    """Its sequence number within the group: the n-th collective of that group on this rank."""
    op: str
    """The op, e.g. "all_reduce", "broadcast", "_allgather_base"."""
    sizes: tuple[tuple[int, ...], ...]
    """The input tensors' shapes."""
    dtypes: tuple[str, ...]
    """The input tensors' dtypes, as torch's recorder names them ("Float", "BFloat16")."""
    completed: bool
    """The work has retired. False for the collective a hung rank waits in."""

    @property
    def key(self) -> tuple[str, int]:
        return self.group, self.seq

    def same_call(self, other: Collective) -> bool:
        """The same op on tensors of the same shapes and dtypes."""
        return (self.op, self.sizes, self.dtypes) == (other.op, other.sizes, other.dtypes)

    def describe(self) -> str:
        """E.g. ``all_reduce #12 of Float[16]`` (``of ...`` left out for a barrier)."""
        tensors = ", ".join(f"{d}[{', '.join(map(str, s))}]" for s, d in zip(self.sizes, self.dtypes))
        group = "" if self.group == "0" else f" in group {self.group}"
        return f"{self.op} #{self.seq}{group}" + (f" of {tensors}" if tensors else "")

    @classmethod
    def from_entry(cls, entry: dict) -> Collective:
        """From one entry of torch's JSON dump (``_dump_fr_trace_json``)."""
        name = str(entry.get("profiling_name") or "?")
        return cls(group=str((entry.get("process_group") or ["?"])[0]), seq=int(entry.get("collective_seq_id") or 0),
                   op=name.split(":", 1)[-1], sizes=tuple(tuple(int(n) for n in s) for s in entry.get("input_sizes") or []),
                   dtypes=tuple(str(d) for d in entry.get("input_dtypes") or []), completed=bool(entry.get("retired")))


class _Recorder:
    """This engine's recorder settings and the start of its current group."""

    def __init__(self) -> None:
        self.group_started_ns = 0
        self.listening: str | None = None

    def turn_on(self, environ=os.environ) -> bool:
        """Before a group is made: the ring's size, unless the user chose one. Returns whether
        the recorder records (it cannot change once the process made its first group)."""
        self.group_started_ns = time.time_ns()  # entries before this are earlier groups'
        if not any(environ.get(v) for v in VARIABLES):
            environ[VARIABLES[0]] = str(ENTRIES)
        size = next(environ[v] for v in VARIABLES if environ.get(v))
        return size.strip() not in ("0", "")


RECORDER = _Recorder()


def turn_on() -> bool:
    """Called by ``process_group.join`` before each group is made."""
    return RECORDER.turn_on()


def last_collectives(kept: int = KEPT) -> list[Collective] | None:
    """This rank's last ``kept`` collectives of its current group (and its subgroups), oldest
    first; None where torch's recorder cannot be read (too old a torch, or it is off)."""
    try:
        import torch._C._distributed_c10d as c10d  # private: torch's only reader

        # NCCL's entries sit in a recorder of their own, with its own reader (CUDA builds only)
        names = ("_dump_nccl_trace_json", "_dump_fr_trace_json") if STATE.backend == "nccl" else ("_dump_fr_trace_json",)
        reader = next(getattr(c10d, n) for n in names if hasattr(c10d, n))
        dump = json.loads(reader(True, False))
    except Exception:  # noqa: BLE001 - no recorder here: the stacks are all there is
        return None
    entries = [e for e in dump.get("entries") or [] if int(e.get("time_created_ns") or 0) >= RECORDER.group_started_ns]
    return [Collective.from_entry(e) for e in entries[-kept:]]


def paths(folder: str, pid: int) -> tuple[str, str]:
    """(the FIFO a request is written to, the JSON file the answer is written to) of one engine."""
    return os.path.join(folder, f"collectives-{pid}.fifo"), os.path.join(folder, f"collectives-{pid}.json")


def listen(folder: str) -> str:
    """Start this engine's answering thread (once); returns the FIFO's path."""
    fifo, answer = paths(folder, os.getpid())
    if RECORDER.listening == fifo:
        return fifo
    with contextlib.suppress(FileExistsError):
        os.mkfifo(fifo, 0o600)
    threading.Thread(target=answer_requests, args=(fifo, answer), name="parakit-collectives", daemon=True).start()
    RECORDER.listening = fifo
    return fifo


def answer_requests(fifo: str, answer: str) -> None:
    while True:
        try:
            with open(fifo, "rb") as f:  # blocks, costing nothing, until a request opens the other end
                f.read()
        except OSError:
            return  # the cluster's folder is gone: the session closed
        found = last_collectives()
        text = json.dumps({"collectives": None if found is None else [c.__dict__ for c in found]})
        with contextlib.suppress(OSError):
            with open(answer + ".tmp", "w") as f:
                f.write(text)
            os.replace(answer + ".tmp", answer)


def request(folder: str, pid: int) -> bool:
    """Ask one engine for its last collectives (from the client); False if it is not listening."""
    fifo, answer = paths(folder, pid)
    with contextlib.suppress(OSError):
        os.remove(answer)
    for _ in range(5):  # its thread may be between two answers (or just started): a moment more
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)  # ENXIO at once when no thread listens
            break
        except OSError:
            time.sleep(0.02)
    else:
        return False
    try:
        os.write(fd, b"?")
    finally:
        os.close(fd)
    return True


def answer(folder: str, pid: int) -> list[Collective] | None:
    """What an engine answered to ``request``: its last collectives, or None (no answer yet,
    or no recorder there)."""
    try:
        with open(paths(folder, pid)[1]) as f:
            found = json.load(f)["collectives"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if found is None:
        return None
    return [Collective(**{**c, "sizes": tuple(tuple(s) for s in c["sizes"]), "dtypes": tuple(c["dtypes"])})
            for c in found]
