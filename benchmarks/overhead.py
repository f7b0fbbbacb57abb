"""parakit's overhead against plain torchrun, by the wall clock, at parakit's default settings.

The same DDP training (parakit's built-in mlp, its data, AdamW, 2 CPU ranks) runs through a
parakit Session and through torchrun (``benchmarks/torchrun_ddp.py``), one after the other in
each round, so machine noise falls on both. Two models: a small one, whose steps (2-5 ms) are
short enough for any per-step cost of parakit's instruments to show, and a large one.

Both sides are timed by the wall clock over their measured steps (from the first step after the
warm-up to the end of the last one, everything between steps included): parakit's
``wall_samples_per_s``, and the same window in the torchrun script. Each round runs a long and
a short run of both; differencing them gives the time per step with every fixed cost of a run
subtracted (parakit's end-of-run profiler window among them). The ratio of the single long runs
is reported too: it keeps those fixed costs in. In the same rounds parakit also runs with its
profiler off (``profile_every=0``), which shows what the default instruments cost.

    python benchmarks/overhead.py                      # 5 rounds, both models
    python benchmarks/overhead.py --rounds 3 --json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

TARGET_RATIO = 0.97  # parakit should keep at least 97% of torchrun's samples/s, by the wall clock
WORLD_SIZE = 2
WARMUP = 5
BASELINE = Path(__file__).with_name("torchrun_ddp.py")
# name -> mlp width, global batch, long and short run lengths (steps, warm-up included)
MODELS = {"small": (64, 256, 460, 60), "large": (1024, 512, 110, 30)}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=5, help="alternated rounds (default 5)")
    p.add_argument("--models", default="small,large", help="which of small,large (default both)")
    p.add_argument("--scale", type=float, default=1.0, help="multiply the run lengths (a quick run: 0.25)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    args = p.parse_args(argv)
    if args.rounds < 1:
        p.error("--rounds must be >= 1")
    unknown = set(args.models.split(",")) - set(MODELS)
    if unknown:
        p.error(f"unknown model {sorted(unknown)[0]!r}; choose from {', '.join(MODELS)}")
    return args


def lengths(name: str, scale: float) -> tuple[int, int]:
    long, short = MODELS[name][2:]
    return max(WARMUP + 10, round(long * scale)), max(WARMUP + 5, round(short * scale))


def torchrun_command(width: int, batch: int, steps: int) -> list[str]:
    """``torchrun`` from this interpreter's environment, on the same run settings."""
    return [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={WORLD_SIZE}",
        str(BASELINE), f"--width={width}", f"--batch-size={batch}", f"--steps={steps}", f"--warmup-steps={WARMUP}",
    ]


def run_torchrun(width: int, batch: int, steps: int) -> dict[str, Any]:
    done = subprocess.run(torchrun_command(width, batch, steps), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"torchrun failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_parakit(session, width: int, batch: int, steps: int, **settings) -> dict[str, Any]:
    result = session.run("mlp", strategy="ddp", workers=WORLD_SIZE, model_options={"width": width},
                         steps=steps, warmup_steps=WARMUP, batch_size=batch, **settings)
    if not result.ok:
        raise RuntimeError(f"parakit run {result.status}: {result.error}")
    s = result.summary
    return {**s, "wall_s": batch * s["measured_steps"] / s["wall_samples_per_s"],
            "params_digest": result.ranks[0].params_digest}


def one_round(session, name: str, scale: float) -> dict[str, Any]:
    width, batch = MODELS[name][:2]
    long, short = lengths(name, scale)
    pk_long, tr_long = run_parakit(session, width, batch, long), run_torchrun(width, batch, long)
    off_long = run_parakit(session, width, batch, long, profile_every=0)
    pk_short, tr_short = run_parakit(session, width, batch, short), run_torchrun(width, batch, short)
    steps = long - short
    pk_step = (pk_long["wall_s"] - pk_short["wall_s"]) / steps
    tr_step = (tr_long["wall_s"] - tr_short["wall_s"]) / steps
    return {
        "parakit_wall_samples_per_s": pk_long["wall_samples_per_s"],
        "torchrun_wall_samples_per_s": tr_long["wall_samples_per_s"],
        "profiler_off_wall_samples_per_s": off_long["wall_samples_per_s"],
        "single_run_ratio": pk_long["wall_samples_per_s"] / tr_long["wall_samples_per_s"],
        "differenced_ratio": tr_step / pk_step,
        "default_over_profiler_off": pk_long["wall_samples_per_s"] / off_long["wall_samples_per_s"],
        "median_over_wall": pk_long["samples_per_s"] / pk_long["wall_samples_per_s"],
        "instrument_wall_share": pk_long["instrument_overhead"]["wall_share"],
        "parakit_step_ms": pk_step * 1e3, "torchrun_step_ms": tr_step * 1e3,
        "same_weights": pk_long["params_digest"] == tr_long["params_digest"],
    }


def measure(args: argparse.Namespace) -> dict[str, Any]:
    import parakit  # here, so --help does not wait for torch

    names = args.models.split(",")
    per_model: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    with (tempfile.TemporaryDirectory(prefix="parakit-overhead-") as runs_dir,
          parakit.Session(workers=WORLD_SIZE, device="cpu", runs_dir=runs_dir, progress=False) as s):
        for i in range(args.rounds):
            for name in names:  # models alternate too, so a noisy minute falls on both
                per_model[name].append(one_round(s, name, args.scale))
                if not args.json:
                    print(f"round {i + 1} {name}: {format_round(per_model[name][-1])}", flush=True)
    report = {"world_size": WORLD_SIZE, "device": "cpu", "warmup_steps": WARMUP, "rounds": args.rounds,
              "target_ratio": TARGET_RATIO, "models": {}}
    for name, rounds in per_model.items():
        width, batch = MODELS[name][:2]
        long, short = lengths(name, args.scale)
        med = {k: statistics.median(r[k] for r in rounds) for k in rounds[0] if k != "same_weights"}
        report["models"][name] = {
            "width": width, "batch_size": batch, "long_steps": long, "short_steps": short, **med,
            "ranges": {k: [min(r[k] for r in rounds), max(r[k] for r in rounds)]
                       for k in ("single_run_ratio", "differenced_ratio", "default_over_profiler_off")},
            "same_weights": all(r["same_weights"] for r in rounds),
            "target_met": min(med["single_run_ratio"], med["differenced_ratio"]) >= TARGET_RATIO,
        }
    return report


def format_round(r: dict[str, Any]) -> str:
    return (f"parakit {r['parakit_wall_samples_per_s']:8.1f} vs torchrun {r['torchrun_wall_samples_per_s']:8.1f} "
            f"samples/s by the wall clock: ratio {r['single_run_ratio']:.3f} (differenced {r['differenced_ratio']:.3f}); "
            f"default / profiler off {r['default_over_profiler_off']:.3f}")


def rows(report: dict[str, Any], command: str) -> list[dict[str, str]]:
    """The rows for docs/benchmarks.md (benchmarks/run_all.py)."""
    out = []
    for name, m in report["models"].items():
        verdict = "met" if m["target_met"] else "NOT met"
        lo, hi = m["ranges"]["single_run_ratio"]
        out.append({
            "figure": f"harness overhead by the wall clock, default settings: parakit wall_samples_per_s / torchrun's, "
                      f"ddp, 2 CPU ranks, {name} mlp (width {m['width']}, batch {m['batch_size']}, "
                      f"{m['torchrun_step_ms']:.1f} ms steps), {m['long_steps']} steps; differenced: per-step time "
                      f"from a {m['long_steps']}- and a {m['short_steps']}-step run, fixed costs subtracted; median of "
                      f"{report['rounds']} alternated rounds{'; final weights bit-identical' if m['same_weights'] else ''}",
            "value": f"**{m['single_run_ratio']:.3f}** (rounds {lo:.2f}-{hi:.2f}); differenced **{m['differenced_ratio']:.3f}**",
            "target": f">= {TARGET_RATIO} ({verdict})", "command": command,
        })
        lo, hi = m["ranges"]["default_over_profiler_off"]
        out.append({
            "figure": f"what the default instruments cost, {name} mlp: wall_samples_per_s at the defaults / with the "
                      f"profiler off (profile_every=0), same rounds; the run's own instrument_overhead.wall_share "
                      f"{m['instrument_wall_share']:.2%}; median-step samples_per_s / wall_samples_per_s "
                      f"{m['median_over_wall']:.3f}",
            "value": f"**{m['default_over_profiler_off']:.3f}** (rounds {lo:.2f}-{hi:.2f})",
            "target": f">= {TARGET_RATIO} ({'met' if m['default_over_profiler_off'] >= TARGET_RATIO else 'NOT met'})",
            "command": command,
        })
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark and print it. Returns the report (also what --json prints)."""
    args = parse_args(argv)
    report = measure(args)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for name, m in report["models"].items():
            print(f"{name}: parakit/torchrun by the wall clock {m['single_run_ratio']:.3f}, differenced "
                  f"{m['differenced_ratio']:.3f}, default/profiler off {m['default_over_profiler_off']:.3f} "
                  f"(target >= {TARGET_RATIO}: {'met' if m['target_met'] else 'NOT met'})")
    return report


if __name__ == "__main__":
    main()
