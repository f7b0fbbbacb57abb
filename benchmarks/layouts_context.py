"""Context parallelism against ddp on the same gpt, side by side: rounds that alternate the two
on the same engines (ddp first in odd rounds, context first in even ones), the step time of
each, context's over ddp's per round, and the repeats compared by parakit.compare
(records/intervals.py: the one rule, with its interval and verdict). Beside them, what context
adds (bytes sent round the ring per step, the breakdown's communication and its exposed part)
and what it saves (activations per rank: each rank keeps half of every sequence).

    python benchmarks/layouts_context.py                    # 2 CPU workers, 3 rounds, ~2 min on 2 cores
    python benchmarks/layouts_context.py --rounds 5 --json  # writes benchmarks/results/layouts_context_cpu.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, installed or not

from against_ddp import alternate, median_figure, median_ms, record  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
SIZE = {"width": 128, "depth": 2, "heads": 4, "seq_len": 256}
FIGURES = {"step_ms": "step_time_s", "comm_ms": "comm_time_s", "exposed_comm_ms": "exposed_comm_time_s"}


def measure(rounds: int, steps: int, batch: int, workers: int, device: str) -> dict:
    runs, rows = alternate("context", SIZE, rounds, steps, batch, workers, device)
    layouts = {s: {**{k: median_ms(runs[s], n) for k, n in FIGURES.items()},
                   "ring_bytes_per_step": median_figure(runs[s], "ring_bytes_per_step"),
                   "comm_bytes_per_step": median_figure(runs[s], "comm_bytes_per_step"),
                   "activation_bytes_per_rank": median_figure(runs[s], "activation_bytes"),
                   "context_path": runs[s][-1].summary.get("context_path")} for s in runs}
    return record("context", runs, rows, layouts, size=SIZE, workers=workers, batch=batch, steps=steps,
                  device=device)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=15)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", action="store_true", help=f"also write {RESULTS.name}/layouts_context_<device>.json")
    args = p.parse_args(argv)
    out = measure(args.rounds, args.steps, args.batch, args.workers, args.device)
    if args.json:
        path = RESULTS / f"layouts_context_{args.device}.json"
        path.write_text(json.dumps(out, indent=1) + "\n")
        print(f"wrote {path}")
    for name, row in out["layouts"].items():
        ring = row["ring_bytes_per_step"]
        print(f"{name:<8} step {row['step_ms']:7.1f} ms  comm {row['comm_ms'] or 0:6.1f} ms "
              f"(exposed {row['exposed_comm_ms'] or 0:6.1f})  ring "
              + ("-" if ring is None else f"{ring / 2**20:.2f} MiB/step")
              + f"  activations/rank {row['activation_bytes_per_rank'] / 2**20:6.2f} MiB")
    c = out["compare"]
    print(f"context / ddp step time, median of {len(out['rounds'])} alternated rounds: {out['context_over_ddp_step']:.2f}; "
          f"throughput context over ddp {c['throughput_ratio']:.2f} ({c['low']:.2f}-{c['high']:.2f}): {c['verdict']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
