"""The advisor's error on the two newest layouts, expert and context, against ddp on the same
model: one advice per layout on 2 CPU engines (calibrated there), its top two verified with
real runs, and each prediction's error |predicted - measured| / measured. The full accuracy
benchmark (advisor_accuracy.py) covers the other layouts over 60 configurations.

    python benchmarks/advisor_new_layouts.py           # ~2 min on 2 cores; prints the table
    python benchmarks/advisor_new_layouts.py --json    # writes benchmarks/results/advisor_new_layouts_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import warnings
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, installed or not

import parakit  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
CASES = {  # layout: (the gpt's options, the strategies advised between)
    "expert": ({"experts": 4, "depth": 2, "width": 64, "seq_len": 64}, ["ddp", "expert"]),
    "context": ({"depth": 2, "width": 64, "seq_len": 64}, ["ddp", "context"]),
}


def measure(steps: int, batch: int) -> dict:
    out = {}
    with tempfile.TemporaryDirectory() as folder, parakit.Session(2, device="cpu", runs_dir=folder,
                                                                  progress=False) as session:
        for layout, (options, strategies) in CASES.items():
            advice = session.advise("gpt", workers=2, model_options=options, batch_size=batch, precisions="fp32",
                                    compressions="none", strategies=strategies, verify=True, top=2, steps=steps)
            out[layout] = {"model_options": options, "verified": [
                {k: v[k] for k in ("label", "predicted_step_time_s", "measured_step_time_s", "error")}
                for v in advice.verified]}
    return out


def _torch() -> str:
    import torch

    return torch.__version__


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--json", action="store_true", help="write benchmarks/results/advisor_new_layouts_cpu.json")
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # the runs' "machine was busy" warnings: the load is recorded below
    load = os.getloadavg()[0]
    cases = measure(args.steps, args.batch_size)
    for layout, case in cases.items():
        for v in case["verified"]:
            print(f"{layout:>8}: {v['label']:<10} predicted {v['predicted_step_time_s'] * 1e3:6.1f} ms, "
                  f"measured {v['measured_step_time_s'] * 1e3:6.1f} ms, {v['error']:.0%} off")
    if args.json:
        RESULTS.mkdir(exist_ok=True)
        record = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "torch": _torch(), "machine": platform.processor() or platform.machine(),
                  "load_average_at_start": load, "steps": args.steps, "batch_size": args.batch_size, "cases": cases}
        (RESULTS / "advisor_new_layouts_cpu.json").write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
