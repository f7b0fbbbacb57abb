"""The benchmark suite in one command: runs the CPU benchmarks and rewrites the generated table
of docs/benchmarks.md (between SUITE_BEGIN and SUITE_END; the rest of the file is kept).

CPU (run here): 1 harness overhead (overhead.py), 2 start-up (startup.py), 3 live metrics
(live_metrics.py), 5 compression hook cost (compression_cost.py). GPU (the device tool): 4 power
sampler (power_check.py) and 6 gpt against the hardware (gpu_suite.py) are rendered from their
JSON in benchmarks/results/ where present, else their rows say how to measure them.

    python benchmarks/run_all.py                      # the CPU suite, ~10 min on 2 cores
    python benchmarks/run_all.py --quick              # a smoke run, ~3 min: prints, saves nothing
    python benchmarks/run_all.py --render-only --gpu-json OUT/gpu_suite.json   # add GPU results
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # the benchmark scripts, importable as modules

# The benchmark scripts beside this file, after the path line above.
import compression_cost
import live_metrics
import machine
import overhead
import startup

DOC = HERE.parent / "docs" / "benchmarks.md"
RESULTS = HERE / "results"
SUITE_BEGIN, SUITE_END = "<!-- suite:begin -->", "<!-- suite:end -->"

# name -> (module, arguments for the full run, for --quick)
CPU_SUITE: dict[str, tuple[Any, list[str], list[str]]] = {
    "overhead": (overhead, ["--rounds", "5"], ["--rounds", "1", "--scale", "0.25"]),
    "startup": (startup, ["--rounds", "5"], ["--rounds", "1"]),
    "live_metrics": (live_metrics, ["--pairs", "9"], ["--pairs", "2", "--steps", "30"]),
    "compression_cost": (compression_cost, ["--mb", "64", "--rounds", "7"], ["--mb", "16", "--rounds", "3"]),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer rounds: a smoke run; prints the table, saves nothing")
    p.add_argument("--only", default=None, help=f"comma-separated subset of {','.join(CPU_SUITE)}")
    p.add_argument("--render-only", action="store_true", help="run nothing; rewrite the doc from benchmarks/results/")
    p.add_argument("--gpu-json", default=None, help="a gpu_suite.py report to keep in benchmarks/results/ and render")
    p.add_argument("--power-json", default=None, help="a power_check.py --json report to keep and render")
    p.add_argument("--no-doc", action="store_true", help="print the rows; leave docs/benchmarks.md alone")
    return p.parse_args(argv)


def run_cpu_suite(args: argparse.Namespace) -> dict[str, Any]:
    """Run the chosen CPU benchmarks; returns {name: what rows() needs, and where and when}."""
    chosen = args.only.split(",") if args.only else list(CPU_SUITE)
    done = {}
    for name in chosen:
        module, full, quick = CPU_SUITE[name]
        argv = quick if args.quick else full
        busy = machine.load_note()
        print(f"== {name} {' '.join(argv)}" + (f"  ({busy})" if busy else ""), flush=True)
        report = module.main(argv)
        done[name] = {"report": report, "command": f"`python benchmarks/{name}.py {' '.join(argv)}`",
                      "busy": busy, "quick": args.quick, "machine": machine.describe(), "date": machine.today()}
    return done


def cpu_rows(name: str, done: dict[str, Any]) -> list[dict[str, str]]:
    """A benchmark's rows, made from its saved report now (so wording fixes need no re-run)."""
    rows = CPU_SUITE[name][0].rows(done["report"], done["command"])
    for row in rows:
        row["figure"] += "".join(f" ({note})" for note in (done["busy"], done["quick"] and "--quick: a smoke run")
                                 if note)
    return rows


def load(path: Path) -> Any:
    return json.loads(path.read_text()) if path.exists() else None


def gpu_rows(gpu: dict[str, Any] | None) -> list[dict[str, str]]:
    """Row 6 from a gpu_suite.py report, or rows that say how to get it."""
    cmd = "`python benchmarks/gpu_suite.py` (device tool)"
    if gpu is None:
        todo = "not yet measured: run `python benchmarks/gpu_suite.py` on the device"
        return [{"figure": f"gpt ~{size} parameters on one GPU: step time, tokens/s, TFLOP/s and MFU for fp32, "
                           "tf32, fp16, bf16, eager and `compile=True`, fused attention (sdpa)",
                 "value": todo, "target": "MFU >= 40 % (bf16, compiled, ~125M, H100)" if size == "125M" else "-",
                 "command": cmd, "machine": "-", "date": "-"} for size in ("25M", "125M")]
    rows = []
    for r in gpu["rows"]:
        mode = "compiled" if r["compile"] else "eager"
        what = f"gpt {r['params'] / 1e6:.3g}M ({r['size']}), {r['precision']}, {mode}, batch {r['batch_size']} x {r['options']['seq_len']}"
        if r["status"] != "ok":
            value = f"{r['status']}: {r.get('reason', '')}"
        else:
            mfu = "-" if r["mfu"] is None else f"{r['mfu'] * 100:.1f} %"
            value = (f"{r['step_time_s'] * 1e3:.1f} ms/step, {r['tokens_per_s']:,.0f} tokens/s, "
                     f"{r['tflops']:.1f} TFLOP/s, MFU **{mfu}**")
        target = "-"
        if r["size"] == "125M" and r["precision"] == "bf16" and r["compile"] and r.get("mfu") is not None:
            target = f"MFU >= 40 % ({'met' if r['mfu'] >= gpu['target_mfu'] else 'NOT met'})"
        rows.append({"figure": what, "value": value, "target": target, "command": f"`{gpu['command']}`",
                     "machine": gpu["machine"], "date": gpu["date"]})
    rows.append({"figure": "attention kernel scaled_dot_product_attention picks, per precision (profiler)",
                 "value": "; ".join(f"{p}: {k}" for p, k in gpu["attention"].items()), "target": "a fused kernel",
                 "command": f"`{gpu['command']}`", "machine": gpu["machine"], "date": gpu["date"]})
    rows += [{"figure": f"gpt {s['size']} {s['precision']} compile={s['compile']}", "value": f"skipped: {s['reason']}",
              "target": "-", "command": f"`{gpu['command']}`", "machine": gpu["machine"], "date": gpu["date"]}
             for s in gpu["skipped"]]
    return rows


def power_rows(power: dict[str, Any] | None) -> list[dict[str, str]]:
    cmd = "`python benchmarks/power_check.py --json` (device tool)"
    if power is None:
        return [{"figure": "power sampler overhead on the GPU (CPU time of the 20 Hz NVML sampler / wall time)",
                 "value": "not yet measured in this suite: run `python benchmarks/power_check.py --json` on the "
                          "device (the hand-run figure in the table below: 0.55 %)",
                 "target": "<= 1 %", "command": cmd, "machine": "-", "date": "-"}]
    overhead_percent = power["matmul"]["sampler_overhead_percent"]
    return [{"figure": "power sampler overhead on the GPU (CPU time of the 20 Hz NVML sampler / wall time, 3 s matmul)",
             "value": f"**{overhead_percent:.2f} %**",
             "target": f"<= 1 % ({'met' if overhead_percent <= 1 else 'NOT met'})", "command": cmd,
             "machine": power.get("machine", power.get("gpu", "-")), "date": power.get("date", "-")}]


def table(rows: list[dict[str, str]]) -> str:
    lines = ["| # | figure | value | target | command | machine | date |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        cells = [r["n"], r["figure"], r["value"], r["target"], r["command"], r["machine"], r["date"]]
        lines.append("| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in cells) + " |")
    return "\n".join(lines)


def render(cpu: dict[str, Any], gpu: dict | None, power: dict | None) -> str:
    rows = []
    for n, name in (("1", "overhead"), ("2", "startup"), ("3", "live_metrics")):
        rows += _numbered(n, name, cpu.get(name))
    rows += [{**r, "n": "4"} for r in power_rows(power)]
    rows += _numbered("5", "compression_cost", cpu.get("compression_cost"))
    rows += [{**r, "n": "6"} for r in gpu_rows(gpu)]
    return "\n".join([SUITE_BEGIN, "<!-- generated by `python benchmarks/run_all.py`; edits here are overwritten -->",
                      "", table(rows), "", SUITE_END])


def _numbered(n: str, name: str, done: dict[str, Any] | None) -> list[dict[str, str]]:
    if done is None:
        return [{"n": n, "figure": "not measured yet", "value": "-", "target": "-",
                 "command": "`python benchmarks/run_all.py`", "machine": "-", "date": "-"}]
    return [{**r, "n": n, "machine": done["machine"], "date": done["date"]} for r in cpu_rows(name, done)]


def write_doc(section: str) -> None:
    text = DOC.read_text()
    if SUITE_BEGIN in text and SUITE_END in text:
        head, rest = text.split(SUITE_BEGIN, 1)
        tail = rest.split(SUITE_END, 1)[1]
        text = head + section + tail
    else:  # first time: after the title and its first paragraph
        head, sep, tail = text.partition("\n\n")
        text = head + sep + section + "\n\n" + tail
    DOC.write_text(text)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    RESULTS.mkdir(exist_ok=True)
    cpu_path, gpu_path, power_path = RESULTS / "cpu_suite.json", RESULTS / "gpu_suite.json", RESULTS / "power_check.json"
    cpu = load(cpu_path) or {}
    if not args.render_only:
        cpu.update(run_cpu_suite(args))
        if not args.quick:  # smoke figures are too noisy to keep
            cpu_path.write_text(json.dumps(cpu, indent=1))
    for given, kept in ((args.gpu_json, gpu_path), (args.power_json, power_path)):
        if given:
            shutil.copyfile(given, kept)
    section = render(cpu, load(gpu_path), load(power_path))
    if args.no_doc or args.quick:
        print(section)
    else:
        write_doc(section)
        print(f"wrote the suite's table into {DOC}")


if __name__ == "__main__":
    main()
