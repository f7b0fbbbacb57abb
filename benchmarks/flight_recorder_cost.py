"""What torch's Flight Recorder costs per collective on gloo (parakit leaves it on: docs/reliability.md).

The recorder's work happens in the calling thread as a collective is issued (an entry in the
ring, and the caller's Python stack captured), whatever the other ranks do. So one gloo rank (a
group of one: its all_reduce is cheap, and no peer's scheduling adds noise; with two ranks on 2
busy cores the noise was +-400 us per collective, far above the cost) times a loop of small
all_reduces called 40 frames deep (an engine's stack under ipyparallel is about that deep). One
round runs a process with the recorder off (``TORCH_FR_BUFFER_SIZE=0``) and one with it on
(2000 entries, torch 2.13's default and parakit's), in alternating order, so the machine's
drift falls on both. The cost is the median over rounds of (on - off) per collective,
and its share of a step is that times the collectives per step over the step time given.

    python benchmarks/flight_recorder_cost.py                  # 7 rounds
    python benchmarks/flight_recorder_cost.py --rounds 3 --json
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import time

WORLD_SIZE = 1
CALLS = 20000
DEPTH = 40
SMALL_MLP_STEP_S = 0.0025  # the overhead benchmark's small mlp, 2 CPU ranks: 1 gradient bucket per step
BUDGET_SHARE = 0.01  # an always-on instrument's share of a step (the power sampler's target)


def _timed(rank: int, port: int, size: str, out) -> None:
    os.environ["TORCH_FR_BUFFER_SIZE"] = size  # read once, when the first group is made
    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD_SIZE)
    t = torch.ones(16)

    def deep(n: int) -> float:
        if n:
            return deep(n - 1)
        for _ in range(200):  # warm-up
            dist.all_reduce(t)
        dist.barrier()
        started = time.perf_counter()
        for _ in range(CALLS):
            dist.all_reduce(t)
        return (time.perf_counter() - started) / CALLS

    per_call = deep(DEPTH)
    if rank == 0:
        out.put(per_call)
    dist.destroy_process_group()


def one(size: str) -> float:
    """Seconds per all_reduce, recorder buffer ``size`` ("0": off)."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = ctx.Queue()
    procs = [ctx.Process(target=_timed, args=(r, port, size, out)) for r in range(WORLD_SIZE)]
    for p in procs:
        p.start()
    value = out.get(timeout=300)
    for p in procs:
        p.join(60)
    return value


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    off, on = [], []
    for i in range(args.rounds):
        order = ("0", "2000") if i % 2 == 0 else ("2000", "0")
        got = {size: one(size) for size in order}
        off.append(got["0"])
        on.append(got["2000"])
    cost = statistics.median(b - a for a, b in zip(off, on))
    report = {
        "off_us_per_collective": round(statistics.median(off) * 1e6, 1),
        "on_us_per_collective": round(statistics.median(on) * 1e6, 1),
        "cost_us_per_collective": round(cost * 1e6, 1),
        "rounds_cost_us": [round((b - a) * 1e6, 1) for a, b in zip(off, on)],
        "small_mlp_step_share": round(cost / SMALL_MLP_STEP_S, 4),
        "within_budget": cost / SMALL_MLP_STEP_S <= BUDGET_SHARE,
        "machine": f"{os.cpu_count()} cores, Python {sys.version.split()[0]}",
    }
    print(json.dumps(report, indent=1) if args.json else
          "\n".join(f"{k}: {v}" for k, v in report.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
