"""What each gradient compression costs to compute, per MiB of gradient.

A DDP model whose gradients are --mb MiB of fp32 weight matrices takes backward passes with
each of parakit's communication hooks (``parakit.engine.compression.register``, as a run
registers them); the hook's cost is the backward time above that with ``none``, divided by the
gradient's MiB. The group is one gloo rank in this process, so the collectives are local copies
and the figure is the compression's own compute (encode + decode + error feedback), not the
wire time it saves (benchmarks/compression.py counts the bytes). Threads: 1, an engine's share
of this 2-core machine under ddp x2. Kinds alternate within each round, so drift falls on all.

    python benchmarks/compression_cost.py                 # 64 MiB of gradients, 7 rounds
    python benchmarks/compression_cost.py --mb 16 --rounds 3 --json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, installed or not

KINDS = ["none", "fp16", "bf16", "powersgd:4", "topk:0.01", "randomk:0.01"]
WIDTH = 1024  # weight matrices of WIDTH x WIDTH: 4 MiB of fp32 gradient each
WARMUP_PASSES = 3  # PowerSGD all-reduces plainly for its first 2 steps (POWERSGD_START_ITER)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mb", type=int, default=64, help="MiB of fp32 gradient, a multiple of 4 (default 64)")
    p.add_argument("--rounds", type=int, default=7, help="timed backward passes per kind (default 7)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    return p.parse_args(argv)


def one_rank_group() -> None:
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)


def make_models(mb: int) -> dict[str, Any]:
    """One DDP replica per kind (each hook keeps state: error feedback, PowerSGD's Q)."""
    import torch
    from torch import nn
    from torch.nn.parallel import DistributedDataParallel

    from parakit.engine import compression

    models = {}
    for kind in KINDS:
        torch.manual_seed(0)
        layers = nn.Sequential(*(nn.Linear(WIDTH, WIDTH, bias=False) for _ in range(mb // 4)))
        ddp = DistributedDataParallel(layers)
        compression.register(ddp, kind, error_feedback=True)
        models[kind] = ddp
    return models


def backward_s(ddp, x) -> float:
    ddp.zero_grad(set_to_none=True)
    started = time.perf_counter()
    ddp(x).sum().backward()  # the hooks run inside, bucket by bucket
    return time.perf_counter() - started


def measure(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    torch.set_num_threads(args.threads)
    one_rank_group()
    models = make_models(args.mb)
    x = torch.randn(1, WIDTH)  # one row: backward's own compute is small beside the hooks
    for ddp in models.values():
        for _ in range(WARMUP_PASSES):
            backward_s(ddp, x)
    times: dict[str, list[float]] = {k: [] for k in KINDS}
    for _ in range(args.rounds):
        for kind, ddp in models.items():
            times[kind].append(backward_s(ddp, x))
    median = {k: statistics.median(v) for k, v in times.items()}
    cost = {k: (median[k] - median["none"]) / args.mb for k in KINDS if k != "none"}
    return {
        "grad_mib": args.mb, "threads": args.threads, "rounds": args.rounds,
        "backward_s": median, "cost_ms_per_mib": {k: v * 1e3 for k, v in cost.items()},
        "none_ms_per_mib": median["none"] / args.mb * 1e3,
    }


def rows(report: dict[str, Any], command: str) -> list[dict[str, str]]:
    costs = ", ".join(f"{k} {v:.2f}" for k, v in report["cost_ms_per_mib"].items())
    return [{
        "figure": f"compression hook cost per MiB of fp32 gradient: backward time above `none` / MiB, DDP on "
                  f"{report['grad_mib']} MiB of 1024x1024 weights, 1 gloo rank (the hook's compute, no wire), "
                  f"{report['threads']} thread, median of {report['rounds']} passes (backward with `none`: "
                  f"{report['none_ms_per_mib']:.2f} ms/MiB)",
        "value": f"{costs} ms/MiB", "target": "recorded here", "command": command,
    }]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.mb < 4 or args.mb % 4:
        sys.exit("--mb must be a positive multiple of 4")
    report = measure(args)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"{args.mb} MiB of gradient, {args.threads} thread; backward with none "
              f"{report['backward_s']['none'] * 1e3:.1f} ms")
        print(f"{'compression':14s} {'backward ms':>12s} {'ms/MiB':>11s}")
        for kind in KINDS:
            cost = report["cost_ms_per_mib"].get(kind)
            print(f"{kind:14s} {report['backward_s'][kind] * 1e3:12.1f} {'-' if cost is None else f'{cost:.3f}':>11s}")
    return report


if __name__ == "__main__":
    main()
