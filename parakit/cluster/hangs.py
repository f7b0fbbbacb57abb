"""Telling a hung run from a slow one, and saying which collective it hung in and who is missing.

A rank that never reaches a collective leaves its peers blocked inside it, where neither a
signal nor the process group's timeout (minutes) helps soon. ``launch`` declares a hang when
rank 0's progress has not moved for the session's ``hang_timeout_s``. Then two readings, taken
together (about a second):

- each rank's last collectives, from torch's Flight Recorder (engine/flight_recorder.py): the
  collective that did not complete (op, sequence number, sizes), and the ranks that never
  entered it or entered a different one (a collective mismatch). This is the report's first line.
- each rank's stack: inside torch (waiting in a collective or in backward for its peers) or
  somewhere else (its own code, data loading, a sleep). One line per rank follows.

Where no rank's recorder answers, the first line is the stacks' verdict, as before.

A run can also end with an engine gone inside a collective: gloo aborts a rank that receives
more than it expects (the same op on tensors of different sizes). ``name_a_death`` reads the
dying engine's last stacks (faulthandler writes them as it aborts) and the other ranks'
recorders, and names the collective on one line.
"""

from __future__ import annotations

import os
import re
from dataclasses import replace

from parakit.cluster.engines import EngineSet
from parakit.cluster.placement import EngineInfo
from parakit.cluster.collectives import last_collectives, mismatch
from parakit.engine import flight_recorder

_FRAME = re.compile(r'^\s+File "(?P<file>[^"]+)", line (?P<line>\d+) in (?P<func>\S+)', re.M)
_TORCH = ("/torch/",)
_FATAL = "Fatal Python error: "  # faulthandler's first line in a dying engine's stack file
_LISTENER = flight_recorder.answer_requests.__name__  # the recorder's thread: in every engine, never the task


def training_frames(dump: str) -> list[tuple[str, int, str]]:
    """The frames (innermost first) of the thread that runs the task: the one whose stack holds
    parakit's engine code, else the first thread with any frames."""
    threads = re.split(r"\n(?=(?:Current thread|Thread) 0x)", dump.strip())
    frames = [[(m["file"], int(m["line"]), m["func"]) for m in _FRAME.finditer(t)] for t in threads]
    frames = [f for f in frames if not any(func == _LISTENER for _, _, func in f)]  # parakit's, not the task's
    ours = [f for f in frames if any("/parakit/engine/" in file for file, _, _ in f)]
    return (ours or [f for f in frames if f] or [[]])[0]


def where(frames: list[tuple[str, int, str]]) -> tuple[bool, str]:
    """(arrived, description): arrived when the innermost frame is torch's own code."""
    if not frames:
        return False, "no Python frame (blocked outside Python?)"
    file, line, func = frames[0]
    short = "/".join(file.split("/")[-2:])
    if any(t in file for t in _TORCH):
        return True, f"waiting inside torch ({func} in {short}:{line})"
    return False, f"in {func} ({short}:{line})"


def diagnose(engines: EngineSet, ranked: list[EngineInfo], silent_s: float) -> str:
    """The hang report: the collective it hung in and who is missing (first line), then one line
    per rank saying where it is, after ``silent_s`` seconds without progress. ``ranked``: the
    run's engines in rank order, as they were when it started."""
    per_rank, dumps = last_collectives(engines, ranked, then=lambda: engines.stacks(ranked))
    late, lines = [], []
    for rank, engine in enumerate(ranked):
        if engine.engine_id not in dumps:
            late.append(rank)
            lines.append(f"rank {rank} (engine {engine.engine_id}): no stack (the engine did not answer)")
            continue
        arrived, text = where(training_frames(dumps[engine.engine_id]))
        if not arrived:
            late.append(rank)
        last = per_rank.get(rank)
        if last:
            text += f"; last collective: {last[-1].describe()}{'' if last[-1].completed else ' (not completed)'}"
        lines.append(f"rank {rank} (engine {engine.engine_id}): {text}")
    named = mismatch(per_rank, len(ranked))
    if named:
        head = f"hung: no progress for {silent_s:.0f} s in {named}"
    elif late:
        head = f"hung: no progress for {silent_s:.0f} s; ranks {late} did not arrive at the collective the others wait in"
    else:
        head = f"hung: no progress for {silent_s:.0f} s; every rank waits inside torch"
    return "\n".join([head, *lines])


def name_a_death(engines: EngineSet, ranked: list[EngineInfo]) -> str | None:
    """One line for a run whose rank's engine was aborted inside a collective: where it was
    (the op and the code that called it), and which collective the other ranks were in. None
    where no engine of the run died so (killed, out of memory: the death says it all)."""
    dead = set(engines.dead_ids([e.engine_id for e in ranked]))
    aborted = {rank: _aborted_in(e) for rank, e in enumerate(ranked) if e.engine_id in dead}
    aborted = {rank: text for rank, text in aborted.items() if text}
    if not aborted:
        return None
    alive = [e if e.engine_id not in dead else replace(e, stack_file="") for e in ranked]  # the dead are not asked
    per_rank, _ = last_collectives(engines, alive)
    others = [f"rank {rank} was in {cs[-1].describe()}" for rank, cs in sorted(per_rank.items()) if cs]
    return (f"ranks {sorted(aborted)} were aborted inside a collective ("
            + "; ".join(f"rank {r}: {t}" for r, t in sorted(aborted.items()))
            + (f"); {', '.join(others)}" if others else ")")
            + ". On gloo that is a collective mismatch: the ranks' tensors differ in size")


def _aborted_in(engine: EngineInfo) -> str | None:
    """Where the engine was when it was aborted (SIGABRT) inside torch.distributed: the op and
    its caller, from the stacks faulthandler wrote as it died; None otherwise."""
    try:
        with open(engine.stack_file, errors="replace") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - 200_000))
            text = f.read()
    except OSError:
        return None
    at = text.rfind(_FATAL)
    if at < 0 or not text[at + len(_FATAL):].startswith("Aborted"):
        return None
    frames = training_frames(text[at:])
    ops = [func for file, _, func in frames if "/torch/distributed/" in file and func != "wrapper"]
    caller = next(((file, line, func) for file, line, func in frames if "/torch/" not in file), None)
    if not ops:
        return None
    called = f", called from {where([caller])[1][3:]}" if caller else ""
    return f"SIGABRT in {ops[-1]}{called}"
