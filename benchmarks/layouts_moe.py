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
import platform
import statistics
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, installed or not

import parakit  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
SIZE = {"width": 128, "depth": 2, "heads": 4, "seq_len": 64, "experts": 4, "top_k": 2}


def measure(rounds: int, steps: int, batch: int, workers: int, device: str) -> dict:
    runs: dict[str, list] = {"ddp": [], "expert": []}
    rows = []
    with tempfile.TemporaryDirectory() as folder, parakit.Session(workers, device=device, runs_dir=folder,
                                                                  progress=False) as session:
        for i in range(rounds):
            order = ("ddp", "expert") if i % 2 == 0 else ("expert", "ddp")  # alternated: drift hits both alike
            for strategy in order:
                r = session.run(model="gpt", model_options=SIZE, strategy=strategy, workers=workers, steps=steps,
                                batch_size=batch, warmup_steps=3, seed=0)
                if not r.ok:
                    raise SystemExit(f"{strategy} failed: {r.error}")
                runs[strategy].append(r)
            ddp, expert = runs["ddp"][-1].summary, runs["expert"][-1].summary
            rows.append({"round": i, "first": order[0], "ddp_step_ms": ddp["step_time_s"] * 1e3,
                         "expert_step_ms": expert["step_time_s"] * 1e3,
                         "expert_over_ddp": expert["step_time_s"] / ddp["step_time_s"]})
    cmp = parakit.compare(runs["expert"], runs["ddp"])  # throughput of expert over ddp's, with its interval

    def figure(strategy: str, name: str) -> float | None:
        values = [r.summary.get(name) for r in runs[strategy] if r.summary.get(name) is not None]
        return statistics.median(values) if values else None

    layouts = {s: {"step_ms": figure(s, "step_time_s") * 1e3,
                   "comm_ms": None if figure(s, "comm_time_s") is None else figure(s, "comm_time_s") * 1e3,
                   "all_to_all_bytes_per_step": figure(s, "all_to_all_bytes_per_step"),
                   "gradient_bytes_per_step": figure(s, "comm_bytes_per_step"),
                   "param_bytes_per_rank": figure(s, "param_bytes"),
                   "expert_imbalance": figure(s, "expert_imbalance")} for s in runs}
    return {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": platform.node(),
            "processor": platform.processor() or platform.machine(), "torch": _torch(), "device": device,
            "model_options": SIZE, "workers": workers, "batch_size": batch, "steps": steps, "rounds": rows,
            "layouts": layouts, "expert_over_ddp_step": statistics.median(r["expert_over_ddp"] for r in rows),
            "compare": {"throughput_ratio": cmp.ratio, "low": cmp.low, "high": cmp.high, "verdict": cmp.verdict}}


def _torch() -> str:
    import torch

    return torch.__version__


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
