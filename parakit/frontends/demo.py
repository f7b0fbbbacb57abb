"""``parakit demo``: the main job. Train the built-in models on 1 worker and on more, print
samples/s and speed-up, and write a self-contained HTML report."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import NamedTuple


class Case(NamedTuple):
    """One lesson of the demo: its settings, and what it shows."""

    name: str
    lesson: str
    settings: dict


# The seed's lesson, diminishing returns, in two cases of one model: the gradients sent each
# step are the same, only the arithmetic per step changes. With a large batch a second worker
# halves the compute and pays for its communication; with a small one there is little compute
# to halve and the step waits for the wire. Sizes per device kind: the demo finishes in under
# 3 minutes on a 2-core CPU, and on a GPU compute, not launch overhead, sets the step time.
DEMO_CASES = {
    "cpu": [
        Case("large batch", "much arithmetic per byte of gradient sent",
             dict(model="mlp", model_options={"width": 1024, "depth": 4}, batch_size=1024, steps=40)),
        Case("small batch", "the same model and gradients, little arithmetic to share",
             dict(model="mlp", model_options={"width": 1024, "depth": 4}, batch_size=16, steps=60)),
    ],
    "cuda": [
        Case("large batch", "much arithmetic per byte of gradient sent",
             dict(model="mlp", model_options={"width": 4096, "depth": 6}, batch_size=8192, steps=50)),
        Case("small batch", "the same model and gradients, little arithmetic to share",
             dict(model="mlp", model_options={"width": 4096, "depth": 6}, batch_size=64, steps=50)),
    ],
}


def demo_workers(gpu_count: int) -> list[int]:
    """1, 2, 4, ... up to one worker per GPU; at least 1 and 2."""
    counts, n = [1, 2], 4
    while n <= gpu_count:
        counts.append(n)
        n *= 2
    return counts


def demo_command(args: argparse.Namespace) -> int:
    from parakit.frontends.options import UsageError, checked_input, engine_settings, price_settings
    from parakit.frontends.report import write_report
    from parakit.frontends.text import explained_table, sweep_progress
    from parakit.session.preflight import engines_here
    from parakit.session.session import Session

    where = engine_settings(args)
    with checked_input():
        here = engines_here(**where)
        gpus, facts = here.gpus, here.facts
        workers = args.workers or demo_workers(len(gpus))
        if min(workers) < 1 or 1 not in workers:
            raise UsageError("demo --workers must include 1 (the baseline), e.g. --workers 1,2")
        engines_here(**where, workers=max(workers))
        if args.steps is not None and args.steps < 3:
            raise UsageError("demo --steps must be >= 3 (2 are warm-up)")
    cases = DEMO_CASES["cuda" if gpus else "cpu"]
    report = Path(args.report) if args.report else Path(args.runs_dir) / "demo-report.html"
    started = time.monotonic()
    print(f"parakit demo: {len(cases)} cases x workers {workers} on "
          f"{f'{len(gpus)} GPU(s)' if gpus else f'CPU ({facts.cpu_count} cores)'}", flush=True)
    results = []
    with Session(max(workers), **where, prices=price_settings(args)) as session:
        for case in cases:
            print(f"{case.name}: {case.lesson}", flush=True)
            # ddp on every worker count: the 1-worker ddp run is the baseline (the same code
            # path), so the speed-up shows what more workers bring and nothing else.
            results += session.sweep(workers, strategy="ddp", on_run=sweep_progress,
                                     **dict(case.settings, steps=args.steps or case.settings["steps"]))
    print()
    print(explained_table(results))
    path = write_report(results, report, title="parakit demo")
    print(f"\nreport: {path.resolve()}  ({time.monotonic() - started:.0f} s)")
    return 0 if all(r.ok for r in results) else 1
