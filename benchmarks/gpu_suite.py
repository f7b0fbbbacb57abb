"""The built-in gpt on one GPU against the hardware's limits: step time, tokens/s, TFLOP/s and
MFU at two sizes (~25M and ~125M parameters), for fp32, tf32, fp16 and bf16, each eager and
with ``compile=True``, all through parakit runs on one engine (strategy single).

Both sizes share width, heads, sequence and batch (they differ in depth), so a precision's
compiled block serves both: compiling costs 4 graphs, not 8. Runs go in order of importance
(bf16 first, the MFU target's row) and stop starting new ones past ``--budget-s``, so a
limited device session still gets the rows that matter; skipped rows say so. The results go
to ``$OUT/gpu_suite.json`` (the device tool brings $OUT back) after every run, and to
``--json PATH``. The attention kernel PyTorch's scaled_dot_product_attention picks for each
precision is read from the profiler, to check it is a fused one (flash / memory-efficient).

    python benchmarks/gpu_suite.py                        # on the GPU (device tool)
    python benchmarks/gpu_suite.py --device cpu --tiny    # smoke check on a CPU: tiny sizes
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, installed or not

import machine  # benchmarks/machine.py: this folder is on sys.path when a script here runs

# width 1024, 8 heads of 128 (flash attention's sweet spot), sequence 1024, batch 16 (16k tokens)
SIZES = {"25M": {"width": 1024, "depth": 2, "heads": 8, "seq_len": 1024},
         "125M": {"width": 1024, "depth": 10, "heads": 8, "seq_len": 1024}}
TINY = {"tiny-1": {"width": 64, "depth": 1, "heads": 2, "seq_len": 32},
        "tiny-2": {"width": 64, "depth": 2, "heads": 2, "seq_len": 32}}
PRECISIONS = ["bf16", "fp16", "tf32", "fp32"]  # most important first
TARGET_MFU = 0.40  # bf16, compiled, the larger size, on an H100


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto", help="auto, cuda or cpu")
    p.add_argument("--tiny", action="store_true", help="tiny sizes and batch, for a CPU smoke check")
    p.add_argument("--steps", type=int, default=8, help="steps per run (default 8)")
    p.add_argument("--warmup-steps", type=int, default=3, help="left out of the median; the first compiles")
    p.add_argument("--batch-size", type=int, default=None, help="sequences per step (default 16; tiny 4)")
    p.add_argument("--precisions", default=",".join(PRECISIONS), help="comma-separated (default all four)")
    p.add_argument("--compile", choices=["both", "on", "off"], default="both", help="compiled, eager or both")
    p.add_argument("--budget-s", type=float, default=140.0, help="start no run after this many seconds")
    p.add_argument("--json", default=None, help="also write the report here")
    return p.parse_args(argv)


def param_count(options: dict[str, int]) -> int:
    """Parameters of the built-in gpt at these options, counted on the meta device (no memory)."""
    import torch

    from parakit.engine.workloads import build_model

    with torch.device("meta"):
        return sum(p.numel() for p in build_model("gpt", options).parameters())


def attention_kernels(device: str, precisions: list[str], options: dict[str, int], batch: int) -> dict[str, str]:
    """The kernel(s) scaled_dot_product_attention runs for each precision, at the suite's shape,
    from one profiled forward + backward in this process (the engines run the same torch)."""
    import torch
    from torch.nn import functional as F
    from torch.profiler import ProfilerActivity, profile

    dtypes = {"fp32": torch.float32, "tf32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    heads, seq = options["heads"], options["seq_len"]
    shape = (batch, heads, seq, options["width"] // heads)
    found = {}
    for precision in precisions:
        q, k, v = (torch.randn(shape, device=device, dtype=dtypes[precision], requires_grad=True) for _ in range(3))
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
        with profile(activities=activities) as prof:
            F.scaled_dot_product_attention(q, k, v, is_causal=True).sum().backward()
        names = {e.name for e in prof.events() if "attention" in e.name.lower() or "fmha" in e.name.lower()
                 or "flash" in e.name.lower()}
        ops = sorted(n for n in names if n.startswith("aten::_") and "backward" not in n)
        found[precision] = ", ".join(ops) or "none found"
    if device == "cuda":
        torch.cuda.empty_cache()  # the engine, not this process, needs the GPU's memory now
    return found


def plan(args: argparse.Namespace) -> list[tuple[str, str, bool]]:
    """(size, precision, compiled) in the order they run: per precision, compiled first (its
    graph then serves the other size at once), larger size first."""
    sizes = list(TINY if args.tiny else SIZES)[::-1]
    compiled = {"both": [True, False], "on": [True], "off": [False]}[args.compile]
    return [(size, precision, c) for precision in args.precisions.split(",") for c in compiled for size in sizes]


def row_of(size: str, options: dict, precision: str, compiled: bool, result, batch: int) -> dict[str, Any]:
    row = {"size": size, "options": options, "params": param_count(options), "precision": precision,
           "compile": compiled, "batch_size": batch, "status": result.status}
    if not result.ok:
        return {**row, "reason": (result.error or "").splitlines()[0][:300]}
    s = result.summary
    return {**row, "step_time_s": s["step_time_s"], "tokens_per_s": s["samples_per_s"] * options["seq_len"],
            "tflops": s.get("tflops_per_device"), "mfu": s.get("mfu"), "device": result.device[0],
            "peak_mem_bytes": s.get("peak_mem_bytes"), "measured_steps": s.get("measured_steps"),
            "unmeasured": dict(result.unmeasured or {})}


def measure(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    import parakit

    started = time.monotonic()
    sizes = TINY if args.tiny else SIZES
    batch = args.batch_size or (4 if args.tiny else 16)
    device = "cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) else "cpu"
    report: dict[str, Any] = {
        "machine": machine.describe(), "date": machine.today(), "command": "python benchmarks/gpu_suite.py "
        + " ".join(sys.argv[1:]), "target_mfu": TARGET_MFU, "rows": [], "skipped": [],
    }
    report["attention"] = attention_kernels(device, args.precisions.split(","), next(iter(sizes.values())), batch)
    with tempfile.TemporaryDirectory(prefix="parakit-gpu-suite-") as runs_dir, \
            parakit.Session(workers=1, device=args.device, runs_dir=runs_dir, progress=False) as s:
        report["engine_start_s"] = time.monotonic() - started
        for size, precision, compiled in plan(args):
            options = sizes[size]
            if time.monotonic() - started > args.budget_s:
                report["skipped"].append({"size": size, "precision": precision, "compile": compiled,
                                          "reason": f"over the {args.budget_s:.0f} s budget"})
                continue
            try:
                result = s.run("gpt", strategy="single", workers=1, model_options=options, precision=precision,
                               compile=compiled, steps=args.steps, warmup_steps=args.warmup_steps,
                               batch_size=batch, profile_every=0)
            except ValueError as e:  # refused before it ran, e.g. tf32 / fp16 on a CPU engine
                report["skipped"].append({"size": size, "precision": precision, "compile": compiled, "reason": str(e)})
                continue
            row = row_of(size, options, precision, compiled, result, batch)
            row["run_s"] = time.monotonic() - started
            report["rows"].append(row)
            print(format_row(row), flush=True)
            save(report, args)
    report["elapsed_s"] = time.monotonic() - started
    save(report, args)
    return report


def save(report: dict[str, Any], args: argparse.Namespace) -> None:
    """After every run, so a session cut short keeps what it measured."""
    paths = [args.json] if args.json else []
    if os.environ.get("OUT"):
        paths.append(os.path.join(os.environ["OUT"], "gpu_suite.json"))
    for path in paths:
        with open(path, "w") as f:
            json.dump(report, f, indent=1)


def fmt(value, scale=1.0, spec=".1f") -> str:
    return "-" if value is None else format(value * scale, spec)


def format_row(r: dict[str, Any]) -> str:
    head = f"{r['size']:>6} {r['params'] / 1e6:6.1f}M {r['precision']:>5} {'compiled' if r['compile'] else 'eager':>8}"
    if r["status"] != "ok":
        return f"{head}  {r['status']}: {r.get('reason', '')}"
    return (f"{head} {fmt(r['step_time_s'], 1e3):>9} {fmt(r['tokens_per_s'], 1, ',.0f'):>11} "
            f"{fmt(r['tflops']):>8} {fmt(r['mfu'], 100):>6}   (at {r['run_s']:.0f} s)")


HEADER = f"{'size':>6} {'params':>7} {'prec':>5} {'mode':>8} {'step ms':>9} {'tokens/s':>11} {'TFLOP/s':>8} {'MFU %':>6}"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    print(HEADER, flush=True)
    report = measure(args)
    print(f"attention kernels: {report['attention']}")
    for skipped in report["skipped"]:
        print(f"skipped {skipped['size']} {skipped['precision']} compile={skipped['compile']}: {skipped['reason']}")
    print(f"{len(report['rows'])} runs in {report['elapsed_s']:.0f} s (engine start {report['engine_start_s']:.0f} s) "
          f"on {report['machine']}")
    return report


if __name__ == "__main__":
    main()
