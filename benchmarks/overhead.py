"""parakit's overhead against plain torchrun: the same DDP training, run side by side.

Each round runs the run once through a parakit Session and once through torchrun
(``benchmarks/torchrun_ddp.py``), one after the other, so machine noise falls on both. The
Session is started once and reused, as in a notebook: start-up is not what this measures.
The figure is the median over rounds of parakit's samples/s divided by torchrun's.

    python benchmarks/overhead.py                      # 3 rounds, mlp width 1024, batch 512, 60 steps
    python benchmarks/overhead.py --rounds 5 --json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import machine  # benchmarks/machine.py: this folder is on sys.path when a script here runs

TARGET_RATIO = 0.97  # parakit should keep at least 97% of torchrun's samples/s
WORLD_SIZE = 2
BASELINE = Path(__file__).with_name("torchrun_ddp.py")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=15, help="parakit-then-torchrun rounds (default 15: fewer cannot resolve 3%% on a noisy 2-core machine)")
    p.add_argument("--steps", type=int, default=60, help="steps per run, warm-up included (default 60)")
    p.add_argument("--warmup-steps", type=int, default=5, help="steps left out of the median (default 5)")
    p.add_argument("--batch-size", type=int, default=512, help="global batch (default 512)")
    p.add_argument("--width", type=int, default=1024, help="mlp width (default 1024)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    args = p.parse_args(argv)
    if args.rounds < 1:
        p.error("--rounds must be >= 1")
    return args


def torchrun_command(args: argparse.Namespace) -> list[str]:
    """``torchrun`` from this interpreter's environment, on the same run settings."""
    return [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={WORLD_SIZE}",
        str(BASELINE), f"--width={args.width}", f"--batch-size={args.batch_size}",
        f"--steps={args.steps}", f"--warmup-steps={args.warmup_steps}",
    ]


def run_torchrun(args: argparse.Namespace) -> dict[str, Any]:
    done = subprocess.run(torchrun_command(args), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(
            f"torchrun failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
        )
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_parakit(session, args: argparse.Namespace) -> dict[str, Any]:
    # Counted beside the ratio: CPU of parakit's own processes, all but the ranks' engines. It
    # does not depend on how busy the machine is, as a throughput ratio on a shared one does.
    ranks = {e["pid"] for e in session.engines[:WORLD_SIZE]}
    before, started = machine.processes_cpu_s(ranks), time.perf_counter()
    result = session.run(
        "mlp", strategy="ddp", workers=WORLD_SIZE, model_options={"width": args.width},
        steps=args.steps, warmup_steps=args.warmup_steps, batch_size=args.batch_size,
    )
    wall = time.perf_counter() - started
    if not result.ok:
        raise RuntimeError(f"parakit run {result.status}: {result.error}")
    share = (machine.processes_cpu_s(ranks) - before) / wall / (os.cpu_count() or 1)
    return {**result.summary, "params_digest": result.ranks[0].params_digest, "harness_cpu_share": share}


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Run the rounds; returns per-round samples/s of both and the median ratio."""
    import parakit  # here, so --help does not wait for torch

    rounds = []
    # progress=False: nothing is drawn; the engines publish their progress all the same.
    with (tempfile.TemporaryDirectory(prefix="parakit-overhead-") as runs_dir,
          parakit.Session(workers=WORLD_SIZE, device="cpu", runs_dir=runs_dir, progress=False) as s):
        for i in range(args.rounds):
            pk, tr = run_parakit(s, args), run_torchrun(args)
            rounds.append({
                "round": i + 1,
                "parakit_samples_per_s": pk["samples_per_s"],
                "torchrun_samples_per_s": tr["samples_per_s"],
                "ratio": pk["samples_per_s"] / tr["samples_per_s"],
                "harness_cpu_share": pk["harness_cpu_share"],
                # Bit-identical final weights: both did exactly the same training.
                "same_weights": pk["params_digest"] == tr["params_digest"],
            })
            if not args.json:
                print(format_round(rounds[-1]), flush=True)
    ratio = statistics.median(r["ratio"] for r in rounds)
    return {
        "model": "mlp", "width": args.width, "strategy": "ddp", "world_size": WORLD_SIZE,
        "device": "cpu", "batch_size": args.batch_size, "steps": args.steps,
        "warmup_steps": args.warmup_steps, "rounds": rounds,
        "parakit_samples_per_s": statistics.median(r["parakit_samples_per_s"] for r in rounds),
        "torchrun_samples_per_s": statistics.median(r["torchrun_samples_per_s"] for r in rounds),
        "ratio": ratio, "target_ratio": TARGET_RATIO, "target_met": ratio >= TARGET_RATIO,
        "harness_cpu_share": statistics.median(r["harness_cpu_share"] for r in rounds),
        "ratio_range": [min(r["ratio"] for r in rounds), max(r["ratio"] for r in rounds)],
        "torchrun_command": " ".join(torchrun_command(args)),
    }


def format_round(r: dict[str, Any]) -> str:
    same = "" if r["same_weights"] else "  (final weights differ!)"
    return (
        f"round {r['round']}: parakit {r['parakit_samples_per_s']:8.1f} samples/s   "
        f"torchrun {r['torchrun_samples_per_s']:8.1f} samples/s   ratio {r['ratio']:.3f}{same}"
    )


def rows(report: dict[str, Any], command: str) -> list[dict[str, str]]:
    """The row for docs/benchmarks.md (benchmarks/run_all.py)."""
    verdict = "met" if report["target_met"] else f"NOT met, {TARGET_RATIO - report['ratio']:.3f} short"
    same = all(r["same_weights"] for r in report["rounds"])
    return [{
        "figure": f"harness overhead: parakit / torchrun samples/s, ddp, 2 CPU ranks, mlp width {report['width']}, "
                  f"batch {report['batch_size']}, {report['steps']} steps; median of {len(report['rounds'])} alternated "
                  f"rounds (parakit {report['parakit_samples_per_s']:.0f} vs torchrun "
                  f"{report['torchrun_samples_per_s']:.0f} samples/s{'; final weights bit-identical' if same else ''})",
        "value": f"**{report['ratio']:.3f}** (rounds {report['ratio_range'][0]:.2f}-{report['ratio_range'][1]:.2f})",
        "target": f">= {TARGET_RATIO} ({verdict})", "command": command,
    }, {
        "figure": "harness overhead, counted: CPU time of parakit's own processes (this client, controller, "
                  "nannies, watchdog; not the ranks' engines) during each parakit run of row 1, / wall time / "
                  "cores, median over rounds (an engine's own ipyparallel threads run inside the rank's "
                  "process: they are in row 1's ratio, not here)",
        "value": f"**{report['harness_cpu_share']:.2%}**",
        "target": f"<= {1 - TARGET_RATIO:.0%} ({'met' if report['harness_cpu_share'] <= 1 - TARGET_RATIO else 'NOT met'})",
        "command": command,
    }]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark and print it. Returns the report (also what --json prints)."""
    args = parse_args(argv)
    report = measure(args)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        verdict = "met" if report["target_met"] else "NOT met"
        print(
            f"median ratio parakit/torchrun: {report['ratio']:.3f} "
            f"(target >= {TARGET_RATIO}: {verdict})"
        )
    return report


if __name__ == "__main__":
    main()
