"""Expert parallelism against ddp on the same mixture-of-experts gpt, side by side: rounds that
alternate the two on the same engines (ddp first in odd rounds, expert first in even ones), the
step time of each, expert's over ddp's per round, and the repeats compared by parakit.compare
(records/intervals.py: the one rule, with its interval and verdict). Beside them, what expert
adds (all-to-all bytes per step, the breakdown's communication) and what it saves (parameters
per rank), and the load imbalance both saw.

    python benchmarks/layouts_moe.py                    # 2 CPU workers, 3 rounds, ~2 min on 2 cores
    python benchmarks/layouts_moe.py --rounds 5 --json  # writes benchmarks/results/layouts_moe_cpu.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, installed or not

from against_ddp import alternate, median_figure, median_ms, record  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
SIZE = {"width": 128, "depth": 2, "heads": 4, "seq_len": 64, "experts": 4, "top_k": 2}


def measure(rounds: int, steps: int, batch: int, workers: int, device: str) -> dict:
    runs, rows = alternate("expert", SIZE, rounds, steps, batch, workers, device)
    layouts = {s: {"step_ms": median_ms(runs[s], "step_time_s"), "comm_ms": median_ms(runs[s], "comm_time_s"),
                   "all_to_all_bytes_per_step": median_figure(runs[s], "all_to_all_bytes_per_step"),
                   "gradient_bytes_per_step": median_figure(runs[s], "comm_bytes_per_step"),
                   "param_bytes_per_rank": median_figure(runs[s], "param_bytes"),
                   "expert_imbalance": median_figure(runs[s], "expert_imbalance")} for s in runs}
    return record("expert", runs, rows, layouts, size=SIZE, workers=workers, batch=batch, steps=steps,
                  device=device)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", action="store_true", help=f"also write {RESULTS.name}/layouts_moe_<device>.json")
    args = p.parse_args(argv)
    out = measure(args.rounds, args.steps, args.batch, args.workers, args.device)
    if args.json:
        path = RESULTS / f"layouts_moe_{args.device}.json"
        path.write_text(json.dumps(out, indent=1) + "\n")
        print(f"wrote {path}")
    for name, row in out["layouts"].items():
        a2a = row["all_to_all_bytes_per_step"]
        print(f"{name:<7} step {row['step_ms']:7.1f} ms  comm {row['comm_ms'] or 0:6.1f} ms  all-to-all "
              f"{(a2a or 0) / 2**20:6.2f} MiB/step  params/rank {row['param_bytes_per_rank'] / 2**20:6.2f} MiB  "
              f"imbalance {row['expert_imbalance']:.2f}")
    c = out["compare"]
    print(f"expert / ddp step time, median of {len(out['rounds'])} alternated rounds: {out['expert_over_ddp_step']:.2f}; "
          f"throughput expert over ddp {c['throughput_ratio']:.2f} ({c['low']:.2f}-{c['high']:.2f}): {c['verdict']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
