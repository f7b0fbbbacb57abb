"""What a checkpoint taken while training costs (``checkpoint_every``): DCP's synchronous save
against the asynchronous one parakit takes (engine/background_save.py), side by side in one run.

Two gloo ranks train gpt (depth 4) under DDP; after every K steps a checkpoint is taken,
alternately synchronous (``saved_state.save``: the loop waits for the files) and asynchronous
(``saved_state.save_in_background``: the loop waits for the state's copy to CPU memory, a thread
writes it, on a process group of its own). Alternated, a noisy moment hits both alike. Per
checkpoint, the slowest rank's:

- pause: the loop stopped for it (an asynchronous one's also includes waiting, at the next
  checkpoint, for the one before to finish, if it had not);
- after: the K steps after it, less the same K steps after a synchronous one (which have
  nothing in flight): what writing behind the training costs the steps on shared cores;
- cost = pause + after; share = cost over K steps' time.

    python benchmarks/checkpoint_cost.py                       # ~2 min on 2 CPU cores
    python benchmarks/checkpoint_cost.py --widths 128 --every 5 --checkpoints 4 --json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, installed or not

ADAM_COPIES = 3  # the parameters and AdamW's two moments, all fp32


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rank_main(rank: int, world: int, port: int, args: argparse.Namespace, folder: str, out: str) -> None:
    """One rank: per width, train and checkpoint as the module's docstring says; rank by rank
    timings go to ``out``."""
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    from parakit.engine import saved_state
    from parakit.engine.losses import cross_entropy
    from parakit.engine.workloads import build_model, built_in_data

    torch.set_num_threads(max(1, (os.cpu_count() or 2) // world))
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    group = dist.new_group(backend="gloo")  # the asynchronous save's collectives, apart from DDP's
    found = []
    for width in args.widths:
        options = {"width": width, "depth": args.depth}
        torch.manual_seed(0)
        model = DDP(build_model("gpt", options))
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        data, parallel = built_in_data("gpt", options, 0), SimpleNamespace(modules=[model])
        rows = args.batch_size // world
        step_no = 0

        def step() -> float:
            nonlocal step_no
            started = time.perf_counter()
            inputs, targets = data.rows(step_no, args.batch_size, rank * rows, (rank + 1) * rows)
            optimizer.zero_grad(set_to_none=True)
            cross_entropy(model(inputs), targets).backward()
            optimizer.step()
            step_no += 1
            return time.perf_counter() - started

        for _ in range(args.warmup):
            step()
        pending, cases = None, []
        for k in range(2 * args.checkpoints):
            kind = "sync" if k % 2 == 0 else "async"
            started = time.perf_counter()
            if pending is not None:  # the asynchronous one before: its wait is its own cost
                pending.result()
                cases[-1]["pause_s"] += time.perf_counter() - started
                pending = None
            started = time.perf_counter()
            path = os.path.join(folder, f"w{width}-{k % 2}")
            if kind == "sync":
                saved_state.save(parallel, optimizer, path, step=step_no, settings={}, rank=rank, alone=False)
            else:
                pending = saved_state.save_in_background(parallel, optimizer, path, group=group, alone=False)
            cases.append({"kind": kind, "pause_s": time.perf_counter() - started,
                          "after_s": sum(step() for _ in range(args.every))})
        if pending is not None:
            pending.result()
        state_mb = sum(p.numel() for p in model.parameters()) * 4 * ADAM_COPIES / 1e6
        found.append({"width": width, "state_mb": state_mb, "cases": cases})
        dist.barrier()
    with open(f"{out}.{rank}", "w") as f:
        json.dump(found, f)
    dist.destroy_process_group()


def summarise(per_rank: list[list[dict]], every: int) -> list[dict]:
    """The slowest rank's figures per checkpoint, medians per kind."""
    rows = []
    for widths in zip(*per_rank):
        cases = [{"kind": c[0]["kind"], "pause_s": max(x["pause_s"] for x in c), "after_s": max(x["after_s"] for x in c)}
                 for c in zip(*(w["cases"] for w in widths))]
        sync = [c for c in cases if c["kind"] == "sync"]
        quiet = statistics.median(c["after_s"] for c in sync)  # K steps with nothing in flight
        row = {"width": widths[0]["width"], "state_mb": widths[0]["state_mb"], "every": every,
               "steps_s": quiet, "checkpoints": len(sync)}
        for kind in ("sync", "async"):
            mine = [c for c in cases if c["kind"] == kind]
            pause = statistics.median(c["pause_s"] for c in mine)
            after = statistics.median(c["after_s"] for c in mine) - quiet
            row.update({f"{kind}_pause_s": pause, f"{kind}_after_s": after, f"{kind}_cost_s": pause + after,
                        f"{kind}_share": (pause + after) / quiet})
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    import torch.multiprocessing as mp

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--widths", default="128,256,512", help="gpt widths, comma separated")
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--every", type=int, default=10, help="K: steps between checkpoints")
    p.add_argument("--checkpoints", type=int, default=4, help="checkpoints of each kind, alternated")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    args.widths = [int(w) for w in args.widths.split(",")]
    with tempfile.TemporaryDirectory() as folder:
        out = os.path.join(folder, "timings")
        mp.spawn(rank_main, args=(2, _free_port(), args, folder, out), nprocs=2, join=True)
        per_rank = [json.loads(Path(f"{out}.{r}").read_text()) for r in range(2)]
    rows = summarise(per_rank, args.every)
    result = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": platform.node(),
              "torch": __import__("torch").__version__, "cpus": os.cpu_count(), "rows": rows}
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    print(f"{'width':>6}{'state MB':>10}{'K steps s':>11}  {'sync pause':>11}{'share':>8}  "
          f"{'async pause':>12}{'after':>8}{'cost':>8}{'share':>8}")
    for r in rows:
        print(f"{r['width']:>6}{r['state_mb']:>10.1f}{r['steps_s']:>11.3f}  {r['sync_pause_s']:>11.3f}"
              f"{r['sync_share']:>7.1%}  {r['async_pause_s']:>12.3f}{r['async_after_s']:>8.3f}"
              f"{r['async_cost_s']:>8.3f}{r['async_share']:>7.1%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
