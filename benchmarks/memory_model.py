"""How far the advisor's memory model (parakit/config/memory_model.py) is from the memory each
run measured, part by part: parameters, gradients, optimizer state and activations of the
fullest rank, for every layout and memory lever that runs on 2 CPU engines (or GPUs, with
``--device cuda``).

The measured parts are what every run records per rank (parameters' and optimizer state's
local bytes, gradients after the step, activations saved for backward on a warm-up step); the
largest rank's value of each part is compared with the model's prediction of that part for the
same RunConfig. Goal (issue "Memory: what fits"): within 10 % for parameters, gradients and
optimizer state, within 25 % for activations.

    python benchmarks/memory_model.py                 # gpt width 128 depth 4, batch 16, ~1 min on 2 cores
    python benchmarks/memory_model.py --json
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
from parakit.config.memory_model import memory_per_rank  # noqa: E402
from parakit.engine.shape import model_shape  # noqa: E402
from parakit.records.memory import PARTS  # noqa: E402
from parakit.records.result import run_label  # noqa: E402

LAYOUTS = [
    {"strategy": "single"},
    {"strategy": "ddp"},
    {"strategy": "ddp", "zero": 1},
    {"strategy": "fsdp", "zero": 2},
    {"strategy": "fsdp", "zero": 3},
    {"strategy": "tensor"},
    {"strategy": "pipeline"},
    {"strategy": "hybrid", "hybrid": "fsdp+tensor", "mesh": "1x2"},
    {"strategy": "ddp", "activation_checkpointing": "selective"},
    {"strategy": "ddp", "activation_checkpointing": "full"},
    {"strategy": "fsdp", "activation_checkpointing": "full"},
]
PREDICTED = {"param_bytes": "params", "gradient_bytes": "gradients", "optimizer_bytes": "optimizer",
             "activation_bytes": "activations"}
GOAL = {"param_bytes": 0.10, "gradient_bytes": 0.10, "optimizer_bytes": 0.10, "activation_bytes": 0.25}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    base = {"model": "gpt", "model_options": {"width": args.width, "depth": args.depth},
            "batch_size": args.batch_size, "steps": 4}
    rows = []
    with tempfile.TemporaryDirectory() as runs, parakit.Session(2, device=args.device, runs_dir=runs,
                                                                progress=False) as session:
        for layout in LAYOUTS:
            settings = {**base, **layout, "workers": 1 if layout["strategy"] == "single" else 2}
            config = session.config(**settings)
            result = session.run(**settings)
            predicted = memory_per_rank(config, model_shape(config), 0.0)
            row = {"layout": run_label(result.config, result.world_size), "ok": result.ok}
            for key in PARTS:
                measured = max((getattr(k, key) for k in result.ranks if getattr(k, key) is not None), default=None)
                guess = predicted[PREDICTED[key]]
                row[key] = {"measured": measured, "predicted": guess,
                            "error": None if not measured else (guess - measured) / measured}
            rows.append(row)
    summary = {key: statistics.median(abs(r[key]["error"]) for r in rows if r[key]["error"] is not None)
               for key in PARTS}
    within = {key: sum(abs(r[key]["error"]) <= GOAL[key] for r in rows if r[key]["error"] is not None)
              for key in PARTS}
    measured = {key: sum(r[key]["error"] is not None for r in rows) for key in PARTS}
    out = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": platform.node(),
           "device": args.device, "model": base, "rows": rows, "median_abs_error": summary,
           "within_goal": within, "measured": measured, "runs": len(rows)}
    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    print(f"{'layout':<34}" + "".join(f"{PREDICTED[k]:>24}" for k in PARTS))
    for r in rows:
        cells = "".join(f"{r[k]['measured'] / 2**20:>9.2f} {r[k]['predicted'] / 2**20:>6.2f} {r[k]['error']:>+6.0%}"
                        if r[k]["error"] is not None else f"{'-':>24}" for k in PARTS)
        print(f"{r['layout']:<34}{cells}")
    print("(each part: measured MiB, predicted MiB, error of the prediction)")
    print("median |error|: " + ", ".join(f"{PREDICTED[k]} {summary[k]:.1%}" for k in PARTS))
    print("within the goal: " + ", ".join(f"{PREDICTED[k]} {within[k]}/{measured[k]}" for k in PARTS)
          + " (of the runs that measured the part)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
