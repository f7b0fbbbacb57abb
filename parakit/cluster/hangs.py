"""Telling a hung run from a slow one, and saying which ranks did not arrive.

A rank that never reaches a collective leaves its peers blocked inside it, where neither a
signal nor the process group's timeout (minutes) helps soon. ``launch`` declares a hang when
rank 0's progress has not moved for the session's ``hang_timeout_s``; then each rank's stack
says where it is: inside torch (waiting in a collective or in backward for its peers) or
somewhere else (its own code, data loading, a sleep): the ones that did not arrive.
"""

from __future__ import annotations

import re

from parakit.cluster.engines import EngineSet
from parakit.cluster.placement import EngineInfo

_FRAME = re.compile(r'^\s+File "(?P<file>[^"]+)", line (?P<line>\d+) in (?P<func>\S+)', re.M)
_TORCH = ("/torch/",)


def training_frames(dump: str) -> list[tuple[str, int, str]]:
    """The frames (innermost first) of the thread that runs the task: the one whose stack holds
    parakit's engine code, else the first thread with any frames."""
    threads = re.split(r"\n(?=(?:Current thread|Thread) 0x)", dump.strip())
    frames = [[(m["file"], int(m["line"]), m["func"]) for m in _FRAME.finditer(t)] for t in threads]
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
    """One line per rank saying where it is, after ``silent_s`` seconds without progress.
    ``ranked``: the run's engines in rank order, as they were when it started."""
    dumps = engines.stacks(ranked)
    late, lines = [], []
    for rank, engine in enumerate(ranked):
        if engine.engine_id not in dumps:
            late.append(rank)
            lines.append(f"rank {rank} (engine {engine.engine_id}): no stack (the engine did not answer)")
            continue
        arrived, text = where(training_frames(dumps[engine.engine_id]))
        if not arrived:
            late.append(rank)
        lines.append(f"rank {rank} (engine {engine.engine_id}): {text}")
    head = (f"hung: no progress for {silent_s:.0f} s; ranks {late} did not arrive at the collective "
            f"the others wait in" if late else f"hung: no progress for {silent_s:.0f} s; every rank waits inside torch")
    return "\n".join([head, *lines])
