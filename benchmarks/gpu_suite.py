"""The built-in gpt on one GPU against the hardware's limits: step time, tokens/s, TFLOP/s, MFU
and energy per token at two sizes (~125M and ~350M parameters), for fp32, tf32, bf16 and fp8,
each eager and with ``compile=True``, all through parakit runs on one engine (strategy single).

Both sizes share width, heads, sequence and batch (they differ in depth), so a precision's
compiled block serves both. Runs go in order of importance (the goals' rows first: bf16 and
fp8 compiled, larger size first) and stop starting new ones past ``--budget-s``, so a limited
device session still gets the rows that matter; skipped rows say so (fp8 where torchao or a
float8 GPU is missing, tf32 and fp8 on a CPU). Two goals are judged from the rows:
- bf16 compiled MFU >= 50 % at ~350M;
- fp8 compiled >= 1.3x bf16 compiled tokens/s at the largest size whose two runs each took at
  most ``--case-budget-s`` (90 s).
Where a goal is missed, the case is profiled in this process after the engine is gone, and the
10 kernels with the most self time say where its time went.

The report goes to ``$OUT/gpu_suite.json`` (the device tool brings $OUT back) after every run,
and to ``--json PATH`` (default ``benchmarks/results/gpu_precisions.json``, not with --tiny).
The attention kernel scaled_dot_product_attention picks for each precision is read from the
profiler, to check it is a fused one (flash / memory-efficient).

    python benchmarks/gpu_suite.py                        # on the GPU (device tool), ~8 minutes
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
import gpu_profile  # benchmarks/gpu_profile.py: where a missed goal's time went

RESULTS = Path(__file__).resolve().parent / "results"
# width 1024, 8 heads of 128 (flash attention's sweet spot), sequence 1024, batch 32 (32k tokens);
# 10 blocks are 127M parameters, 28 are 354M. Every linear is a multiple of 16: fp8 converts all
# but the head (62 characters of vocabulary).
SIZES = {"125M": {"width": 1024, "depth": 10, "heads": 8, "seq_len": 1024},
         "350M": {"width": 1024, "depth": 28, "heads": 8, "seq_len": 1024}}
TINY = {"tiny-1": {"width": 64, "depth": 1, "heads": 2, "seq_len": 32},
        "tiny-2": {"width": 64, "depth": 2, "heads": 2, "seq_len": 32}}
PRECISIONS = ["bf16", "fp8", "tf32", "fp32"]  # most important first
GOAL_MFU = 0.50  # bf16, compiled, the larger size
GOAL_FP8_SPEEDUP = 1.3  # fp8 / bf16 tokens/s, compiled, the largest size within the case budget


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto", help="auto, cuda or cpu")
    p.add_argument("--tiny", action="store_true", help="tiny sizes and batch, for a CPU smoke check")
    p.add_argument("--steps", type=int, default=8, help="steps per run (default 8)")
    p.add_argument("--warmup-steps", type=int, default=3, help="left out of the median; the first compiles")
    p.add_argument("--batch-size", type=int, default=None, help="sequences per step (default 32; tiny 4)")
    p.add_argument("--precisions", default=",".join(PRECISIONS), help="comma-separated (default all four)")
    p.add_argument("--compile", choices=["both", "on", "off"], default="both", help="compiled, eager or both")
    p.add_argument("--budget-s", type=float, default=330.0, help="start no run after this many seconds")
    p.add_argument("--case-budget-s", type=float, default=90.0, help="the fp8 goal's size must run within this")
    p.add_argument("--no-profile", action="store_true", help="do not profile a missed goal's case")
    p.add_argument("--json", default=None, help="also write the report here (default: benchmarks/results/"
                                                 "gpu_precisions.json, none with --tiny)")
    args = p.parse_args(argv)
    if args.json is None and not args.tiny:
        args.json = str(RESULTS / "gpu_precisions.json")
    return args


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

    # fp8's attention runs under bf16 autocast: torchao converts linears only
    dtypes = {"fp32": torch.float32, "tf32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16,
              "fp8": torch.bfloat16}
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
    """(size, precision, compiled) in the order they run: the goals' cases first (bf16 and fp8
    compiled, larger size first), then per precision, compiled first (its graph then serves the
    other size at once), larger size first."""
    sizes = list(TINY if args.tiny else SIZES)[::-1]
    compiled = {"both": [True, False], "on": [True], "off": [False]}[args.compile]
    every = [(size, precision, c) for precision in args.precisions.split(",") for c in compiled for size in sizes]
    goals = [case for case in every if case[1] in ("bf16", "fp8") and case[2]]
    return goals + [case for case in every if case not in goals]


def row_of(size: str, options: dict, precision: str, compiled: bool, result, batch: int) -> dict[str, Any]:
    row = {"size": size, "options": options, "params": param_count(options), "precision": precision,
           "compile": compiled, "batch_size": batch, "status": result.status}
    if not result.ok:
        return {**row, "reason": (result.error or "").splitlines()[0][:300]}
    s = result.summary
    tokens_per_j = s["samples_per_j"] * options["seq_len"] if s.get("samples_per_j") else None
    return {**row, "step_time_s": s["step_time_s"], "tokens_per_s": s["samples_per_s"] * options["seq_len"],
            "tflops": s.get("tflops_per_device"), "mfu": s.get("mfu"), "device": result.device_names[0],
            # the meter's window is the measured steps', the same steps the throughput covers
            "energy_per_token_j": 1 / tokens_per_j if tokens_per_j else None, "avg_power_w": s.get("avg_power_w"),
            "peak_mem_bytes": s.get("peak_mem_bytes"), "measured_steps": s.get("measured_steps"),
            "fp8_layers": len(s["fp8_layers"]) if s.get("fp8_layers") else None,
            "unmeasured": dict(result.unmeasured or {})}


def judge_goals(rows: list[dict[str, Any]], sizes: list[str], case_budget_s: float) -> list[dict[str, Any]]:
    """The two goals from the rows: bf16 compiled MFU at the largest size, and fp8 / bf16
    compiled tokens/s at the largest size whose two runs each fit the case budget. A goal with
    no rows to judge it says why; ``case`` names what to profile when one is missed."""
    ok = {(r["size"], r["precision"], r["compile"]): r for r in rows if r["status"] == "ok"}
    largest = sizes[-1]
    bf16 = ok.get((largest, "bf16", True))
    mfu_goal = {"goal": f"bf16 compiled MFU >= {GOAL_MFU:.0%} at {largest}", "size": largest,
                "case": (largest, "bf16", True), "value": bf16 and bf16["mfu"]}
    mfu_goal["met"] = None if mfu_goal["value"] is None else mfu_goal["value"] >= GOAL_MFU
    if mfu_goal["met"] is None:
        mfu_goal["reason"] = "no bf16 compiled run with an MFU at this size"
    fits = [size for size in sizes
            if all((size, q, True) in ok and ok[(size, q, True)]["run_wall_s"] <= case_budget_s for q in ("bf16", "fp8"))]
    fp8_goal = {"goal": f"fp8 >= {GOAL_FP8_SPEEDUP}x bf16 tokens/s, compiled, the largest size within "
                        f"{case_budget_s:.0f} s", "size": fits[-1] if fits else None, "value": None, "met": None}
    if fits:
        size = fits[-1]
        fp8_goal["case"] = (size, "fp8", True)
        fp8_goal["value"] = ok[(size, "fp8", True)]["tokens_per_s"] / ok[(size, "bf16", True)]["tokens_per_s"]
        fp8_goal["met"] = fp8_goal["value"] >= GOAL_FP8_SPEEDUP
    else:
        fp8_goal["reason"] = "no size with both a bf16 and an fp8 compiled run within the case budget"
    return [mfu_goal, fp8_goal]


def measure(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    import parakit

    started = time.monotonic()
    sizes = TINY if args.tiny else SIZES
    batch = args.batch_size or (4 if args.tiny else 32)
    device = "cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) else "cpu"
    report: dict[str, Any] = {
        "machine": machine.describe(), "date": machine.today(), "command": "python benchmarks/gpu_suite.py "
        + " ".join(sys.argv[1:]), "goal_mfu": GOAL_MFU, "goal_fp8_speedup": GOAL_FP8_SPEEDUP,
        "case_budget_s": args.case_budget_s, "rows": [], "skipped": [], "profiles": [],
    }
    report["attention"] = attention_kernels(device, args.precisions.split(","), next(iter(sizes.values())), batch)
    # the first step of a compiled fp8 run at 350M compiles for a minute: not a hang
    with tempfile.TemporaryDirectory(prefix="parakit-gpu-suite-") as runs_dir, \
            parakit.Session(workers=1, device=args.device, runs_dir=runs_dir, progress=False, hang_timeout_s=300) as s:
        report["engine_start_s"] = time.monotonic() - started
        for size, precision, compiled in plan(args):
            options = sizes[size]
            if time.monotonic() - started > args.budget_s:
                report["skipped"].append({"size": size, "precision": precision, "compile": compiled,
                                          "reason": f"over the {args.budget_s:.0f} s budget"})
                continue
            run_started = time.monotonic()
            try:
                result = s.run("gpt", strategy="single", workers=1, model_options=options, precision=precision,
                               compile=compiled, steps=args.steps, warmup_steps=args.warmup_steps,
                               batch_size=batch, profile_every=0)
            except ValueError as e:  # refused before it ran: tf32 / fp8 on a CPU engine, fp8 without torchao
                report["skipped"].append({"size": size, "precision": precision, "compile": compiled, "reason": str(e)})
                continue
            row = row_of(size, options, precision, compiled, result, batch)
            row["run_s"] = time.monotonic() - started
            row["run_wall_s"] = time.monotonic() - run_started
            report["rows"].append(row)
            print(format_row(row), flush=True)
            save(report, args)
    report["goals"] = judge_goals(report["rows"], list(sizes), args.case_budget_s)
    save(report, args)
    if not args.no_profile:  # after the engine is gone: the GPU is this process's alone
        for goal in report["goals"]:
            if goal["met"] is False:
                size, precision, compiled = goal["case"]
                report["profiles"].append(gpu_profile.top_kernels(sizes[size], precision, compiled, batch, device,
                                                                  label=f"{size} {precision} compiled"))
                save(report, args)
    report["elapsed_s"] = time.monotonic() - started
    save(report, args)
    return report


def save(report: dict[str, Any], args: argparse.Namespace) -> None:
    """After every run, so a session cut short keeps what it measured."""
    paths = [args.json] if args.json else []
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
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
            f"{fmt(r['tflops']):>8} {fmt(r['mfu'], 100):>6} {fmt(r['energy_per_token_j'], 1e3, '.3f'):>9}"
            f"   (at {r['run_s']:.0f} s, {r['run_wall_s']:.0f} s for this run)")


HEADER = (f"{'size':>6} {'params':>7} {'prec':>5} {'mode':>8} {'step ms':>9} {'tokens/s':>11} {'TFLOP/s':>8} "
          f"{'MFU %':>6} {'mJ/token':>9}")


def format_goal(goal: dict[str, Any]) -> str:
    if goal["met"] is None:
        return f"goal {goal['goal']}: not judged ({goal['reason']})"
    value = f"{goal['value']:.1%}" if "MFU" in goal["goal"] else f"{goal['value']:.2f}x"
    return f"goal {goal['goal']}: {value} at {goal['size']}, {'met' if goal['met'] else 'NOT met'}"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    print(HEADER, flush=True)
    report = measure(args)
    print(f"attention kernels: {report['attention']}")
    for goal in report["goals"]:
        print(format_goal(goal))
    for profile in report["profiles"]:
        print(gpu_profile.format_profile(profile))
    for skipped in report["skipped"]:
        print(f"skipped {skipped['size']} {skipped['precision']} compile={skipped['compile']}: {skipped['reason']}")
    print(f"{len(report['rows'])} runs in {report['elapsed_s']:.0f} s (engine start {report['engine_start_s']:.0f} s) "
          f"on {report['machine']}")
    return report


if __name__ == "__main__":
    main()
