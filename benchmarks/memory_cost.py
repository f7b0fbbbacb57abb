"""What the memory instrument (parakit.engine.memory) costs a run: gpt under ddp on 2 CPU
engines, with the instrument as it ships (activations counted on the last warm-up step), off,
and counting every step (the hooks' own price per step, which the default keeps out of the
measured steps). The three alternate within each round, so drift falls on all.

Each figure is a ratio to the run without the instrument: the median measured step (the
summary's ``step_time_s``) and the wall clock of the measured steps (``wall_samples_per_s``,
inverted), median over rounds. Gradients and the allocator are read after the steps in every
variant but "off".

    python benchmarks/memory_cost.py                   # 8 rounds of 40 steps
    python benchmarks/memory_cost.py --rounds 3 --steps 20 --json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, installed or not

VARIANTS = ["off", "default", "every step"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=8, help="alternated rounds (default 8)")
    p.add_argument("--steps", type=int, default=40, help="steps per run, 2 warm-up included (default 40)")
    p.add_argument("--batch", type=int, default=16, help="global batch (default 16)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    return p.parse_args(argv)


def set_counting(variant: str) -> None:
    """On an engine: which steps MemoryCount counts ("off": none, and nothing read after)."""
    import contextlib

    from parakit.engine import memory

    cls = memory.MemoryCount
    shipped = cls.__dict__.get("_shipped_counting", cls.counting)
    cls._shipped_counting = shipped
    cls.counting = shipped
    cls.measures = cls.__dict__.get("_shipped_measures", cls.measures)
    cls._shipped_measures = cls.measures
    if variant == "off":
        cls.counting = lambda self, step: contextlib.nullcontext()
        cls.measures = lambda self, parameters, failed: {}
    elif variant == "every step":
        def every(self, step):
            self.step = step
            return shipped(self, step)
        cls.counting = every


def measure(args: argparse.Namespace) -> dict[str, Any]:
    import parakit

    per: dict[str, dict[str, list[float]]] = {v: {"step_time_s": [], "wall_s": [], "count_s": []} for v in VARIANTS}
    with tempfile.TemporaryDirectory() as runs, \
            parakit.Session(workers=2, device="cpu", runs_dir=runs, progress=False) as s:
        client = s._engines.client
        for i in range(args.rounds + 1):  # the first round warms the engines up and is dropped
            for variant in VARIANTS[i % 3:] + VARIANTS[:i % 3]:
                client[:].apply_sync(set_counting, variant)
                r = s.run("gpt", strategy="ddp", workers=2, steps=args.steps, batch_size=args.batch, live=False)
                assert r.ok, r.error
                if i:
                    summary = r.summary
                    per[variant]["step_time_s"].append(summary["step_time_s"])
                    per[variant]["wall_s"].append(args.batch / summary["wall_samples_per_s"])
                    per[variant]["count_s"].append(summary["instrument_overhead"].get("activation_count_s") or 0.0)
        client[:].apply_sync(set_counting, "default")
    off = per["off"]
    out: dict[str, Any] = {"rounds": args.rounds, "steps": args.steps, "batch": args.batch,
                           "step_time_ms_off": statistics.median(off["step_time_s"]) * 1e3}
    for variant in VARIANTS[1:]:
        got = per[variant]
        out[variant] = {
            "step_time_ratio": statistics.median(a / b for a, b in zip(got["step_time_s"], off["step_time_s"])),
            "wall_ratio": statistics.median(a / b for a, b in zip(got["wall_s"], off["wall_s"])),
            "hooks_ms": statistics.median(got["count_s"]) * 1e3,  # all counted steps together
            "step_time_ratios": [round(a / b, 3) for a, b in zip(got["step_time_s"], off["step_time_s"])],
        }
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    report = measure(args)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"gpt ddp x2, batch {args.batch}, {args.steps} steps, {args.rounds} rounds; "
              f"step without the instrument {report['step_time_ms_off']:.1f} ms")
        for variant in VARIANTS[1:]:
            v = report[variant]
            print(f"{variant:11s} step time x{v['step_time_ratio']:.3f}, measured wall x{v['wall_ratio']:.3f}, "
                  f"hooks {v['hooks_ms']:.2f} ms in all the steps they counted")
    return report


if __name__ == "__main__":
    main()
