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
import platform
import statistics
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, installed or not

import parakit  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
SIZE = {"width": 128, "depth": 2, "heads": 4, "seq_len": 256}
FIGURES = {"step_ms": "step_time_s", "comm_ms": "comm_time_s", "exposed_comm_ms": "exposed_comm_time_s"}


def measure(rounds: int, steps: int, batch: int, workers: int, device: str) -> dict:
    runs: dict[str, list] = {"ddp": [], "context": []}
    rows = []
    with tempfile.TemporaryDirectory() as folder, parakit.Session(workers, device=device, runs_dir=folder,
                                                                  progress=False) as session:
        for i in range(rounds):
            order = ("ddp", "context") if i % 2 == 0 else ("context", "ddp")  # alternated: drift hits both alike
            for strategy in order:
                r = session.run(model="gpt", model_options=SIZE, strategy=strategy, workers=workers, steps=steps,
                                batch_size=batch, warmup_steps=3, seed=0)
                if not r.ok:
                    raise SystemExit(f"{strategy} failed: {r.error}")
                runs[strategy].append(r)
            ddp, context = runs["ddp"][-1].summary, runs["context"][-1].summary
            rows.append({"round": i, "first": order[0], "ddp_step_ms": ddp["step_time_s"] * 1e3,
                         "context_step_ms": context["step_time_s"] * 1e3,
                         "context_over_ddp": context["step_time_s"] / ddp["step_time_s"]})
    cmp = parakit.compare(runs["context"], runs["ddp"])  # throughput of context over ddp's, with its interval

    def figure(strategy: str, name: str) -> float | None:
        values = [r.summary.get(name) for r in runs[strategy] if r.summary.get(name) is not None]
        return statistics.median(values) if values else None

    layouts = {s: {**{k: None if figure(s, n) is None else figure(s, n) * 1e3 for k, n in FIGURES.items()},
                   "ring_bytes_per_step": figure(s, "ring_bytes_per_step"),
                   "comm_bytes_per_step": figure(s, "comm_bytes_per_step"),
                   "activation_bytes_per_rank": figure(s, "activation_bytes"),
                   "context_path": runs[s][-1].summary.get("context_path")} for s in runs}
    return {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": platform.node(),
            "processor": platform.processor() or platform.machine(), "torch": _torch(), "device": device,
            "model_options": SIZE, "workers": workers, "batch_size": batch, "steps": steps, "rounds": rows,
            "layouts": layouts, "context_over_ddp_step": statistics.median(r["context_over_ddp"] for r in rows),
            "compare": {"throughput_ratio": cmp.ratio, "low": cmp.low, "high": cmp.high, "verdict": cmp.verdict}}


def _torch() -> str:
    import torch

    return torch.__version__


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
