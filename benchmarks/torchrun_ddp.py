"""The baseline for parakit's overhead: the same DDP training as ``parakit.Session.run``, as a
plain torchrun script (no ipyparallel, no Session).

Everything that decides the work is parakit's own: the model and data come from
``parakit.engine.workloads``, the loss from ``parakit.engine.train``; the seed, AdamW, the
global batch split by rank, the thread count (cores // world) and the step timing are done
as in parakit's loop. Only the engine machinery around the loop is left out.

Run it with torchrun; rank 0 prints one JSON line:

    torchrun --standalone --nproc-per-node 2 benchmarks/torchrun_ddp.py --width 1024 \\
        --batch-size 512 --steps 60 --warmup-steps 5
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from parakit.config.hosts import usable_cores
from parakit.engine.train import cross_entropy, params_digest
from parakit.engine.workloads import build_model, built_in_data

MODEL = "mlp"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--width", type=int, default=1024, help="mlp width (default 1024)")
    p.add_argument("--batch-size", type=int, default=512, help="global batch (default 512)")
    p.add_argument("--steps", type=int, default=60, help="steps, warm-up included (default 60)")
    p.add_argument("--warmup-steps", type=int, default=5, help="steps left out of the median")
    p.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate (parakit's default)")
    p.add_argument("--seed", type=int, default=0, help="seed for weights and data (parakit's default)")
    return p.parse_args(argv)


def cores() -> int:
    """The cores this process may use, counted as parakit's engines count them."""
    return usable_cores()


def train(args: argparse.Namespace, rank: int, world: int) -> dict:
    """parakit's training loop for one rank, without progress publishing. Returns its measurements."""
    per_rank = args.batch_size // world
    lo, hi = rank * per_rank, (rank + 1) * per_rank
    options = {"width": args.width}

    # The same seed on every rank gives the same initial weights without a broadcast.
    torch.manual_seed(args.seed)
    model = DistributedDataParallel(build_model(MODEL, options), device_ids=None)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
    batches = built_in_data(MODEL, options, args.seed)
    losses: list[torch.Tensor] = []
    # A wall clock per step, as parakit's StepTimer on a CPU: one mark before the first step and
    # one after each, so a step's time is data fetch + forward + backward + optimizer step.
    marks = [time.perf_counter()]
    for step in range(args.steps):
        inputs, targets = batches.rows(step, args.batch_size, lo, hi)
        loss = cross_entropy(model(inputs), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # the gradient all-reduce runs here, bucket by bucket
        optimizer.step()
        marks.append(time.perf_counter())
        losses.append(loss.detach())
    return {
        "step_time_s": [b - a for a, b in zip(marks, marks[1:])],
        "marks": marks,
        "losses": torch.stack(losses).tolist(),
        "params_digest": params_digest(model),
    }


def summarize(ranks: list[dict], args: argparse.Namespace) -> dict:
    """parakit's summary: a step takes as long as its slowest rank; the median of the measured
    (non-warm-up) steps gives samples/s for the global batch."""
    step_times = [max(times) for times in zip(*(r["step_time_s"] for r in ranks))]
    # The measured steps' wall clock, as parakit's wall_samples_per_s takes it: from the first
    # measured step's start to the last step's end, slowest rank.
    wall_s = max(r["marks"][-1] - r["marks"][args.warmup_steps] for r in ranks)
    step_time_s = statistics.median(step_times[args.warmup_steps:])
    losses = [sum(step) / len(step) for step in zip(*(r["losses"] for r in ranks))]
    return {
        "samples_per_s": args.batch_size / step_time_s,
        "wall_s": wall_s,
        "wall_samples_per_s": args.batch_size * (len(step_times) - args.warmup_steps) / wall_s,
        "step_time_s": step_time_s,
        "measured_steps": len(step_times) - args.warmup_steps,
        "loss_first": losses[0],
        "loss_last": losses[-1],
        "params_in_sync": len({r["params_digest"] for r in ranks}) == 1,
        "params_digest": ranks[0]["params_digest"],
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.warmup_steps >= args.steps:
        sys.exit(f"--warmup-steps ({args.warmup_steps}) must be smaller than --steps ({args.steps})")
    dist.init_process_group("gloo")  # torchrun's env:// rendezvous; CPU, as parakit's CPU engines
    rank, world = dist.get_rank(), dist.get_world_size()
    if args.batch_size % world:
        sys.exit(f"--batch-size {args.batch_size} does not divide over {world} ranks")
    threads = max(1, cores() // world)  # parakit's share per engine; overrides torchrun's OMP_NUM_THREADS=1
    torch.set_num_threads(threads)
    mine = train(args, rank, world)
    ranks: list[dict] = [{}] * world
    dist.all_gather_object(ranks, mine)  # after the timed loop
    gc.collect()  # the DDP model (its reducer holds the group) goes before the group does
    dist.barrier()  # every rank past the last collective before any closes its connections
    dist.destroy_process_group()
    if rank == 0:
        summary = summarize(ranks, args)
        summary.update(
            runner="torchrun", model=MODEL, width=args.width, world_size=world, threads=threads,
            batch_size=args.batch_size, steps=args.steps, warmup_steps=args.warmup_steps,
        )
        print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
    # Skip interpreter teardown: with torch 2.13 and gloo it intermittently aborts after the
    # result is out ("terminate called without an active exception", about 1 run in 25 here),
    # and torchrun would then report the whole run as failed.
    sys.stdout.flush()
    os._exit(0)
