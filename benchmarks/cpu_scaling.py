"""A CPU scaling curve: ddp, fsdp and the fastest pipeline schedule for gpt and the mlp at 1, 2, 4
and 8 CPU engines, strong scaling (the global batch fixed) and weak scaling (the batch per worker
fixed), each against the ideal, with the time breakdown and the energy at every size.

One Session holds as many engines as the largest size, so every engine gets the same share of
the machine, cores // engines torch threads (2 each for 8 engines on 16 cores), and a run on n
workers uses n of them: adding workers adds cores, as adding GPUs would. Speed-ups are against
strategy single on one of those engines at the same batch (strong) or the same batch per
worker (weak), so ideal is n either way. The pipeline's schedule is the fastest of gpipe, 1f1b
and interleaved in a probe at 4 workers (strong batch), then used at every size. Runs stop
starting past ``--budget-s``; skipped rows say so.

The report goes to ``--json`` (default benchmarks/results/cpu_scaling.json) and ``$OUT``; the
figure to ``--figure`` (default docs/images/cpu_scaling.svg) where kaleido finds a browser, and
always as plotly JSON beside the report, which ``--render-only`` draws again anywhere.

    python benchmarks/cpu_scaling.py                                  # the curve: 16 cores, ~5 min
    python benchmarks/cpu_scaling.py --workers 1,2 --steps 4 --json /tmp/s.json --figure /tmp/s.svg
    python benchmarks/cpu_scaling.py --render-only benchmarks/results/cpu_scaling.json
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

ROOT = Path(__file__).resolve().parents[1]
# Sized for ~0.1-0.5 s steps on 2 threads. gpt: 8 blocks, so gpipe and 1f1b split over 8
# workers; mlp: depth 9 gives 8 blocks. Strong batches divide over 8 ranks and 16 micro-batches.
MODELS: dict[str, dict[str, Any]] = {
    "gpt": {"model": "gpt", "model_options": {"width": 128, "depth": 8, "heads": 4, "seq_len": 64}, "batch_size": 32},
    "mlp": {"model": "mlp", "model_options": {"width": 1024, "depth": 9}, "batch_size": 256},
}
WEAK_SHARE = 4  # weak scaling's batch per worker: the strong batch / this (so 8 workers train 2x it)
STRATEGIES = ("ddp", "fsdp", "pipeline")
SCHEDULES = ("gpipe", "1f1b", "interleaved")
PROBE_WORKERS = 4
BREAKDOWN = ("compute_time_s", "comm_time_s", "exposed_comm_time_s", "idle_time_s")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workers", default="1,2,4,8", help="comma-separated engine counts (default 1,2,4,8)")
    p.add_argument("--models", default="gpt,mlp", help="comma-separated: gpt, mlp")
    p.add_argument("--steps", type=int, default=12, help="steps per run (default 12)")
    p.add_argument("--warmup-steps", type=int, default=2, help="left out of the medians")
    p.add_argument("--budget-s", type=float, default=330.0, help="start no run after this many seconds")
    p.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "cpu_scaling.json"))
    p.add_argument("--figure", default=str(ROOT / "docs" / "images" / "cpu_scaling.svg"))
    p.add_argument("--render-only", metavar="JSON", default=None, help="draw the figure of a saved report")
    args = p.parse_args(argv)
    args.workers = sorted({int(w) for w in args.workers.split(",")})
    args.models = [m for m in args.models.split(",") if m]
    unknown = [m for m in args.models if m not in MODELS]
    if unknown or args.workers[0] < 1:
        p.error(f"models must be among {', '.join(MODELS)} and workers >= 1")
    return args


def batch_for(model: str, mode: str, workers: int) -> int:
    """The global batch of a run: fixed (strong), or the batch per worker times the workers (weak)."""
    strong = MODELS[model]["batch_size"]
    return strong // WEAK_SHARE * workers if mode == "weak" else strong  # the probe runs at the strong batch


def row_of(model: str, mode: str, layout: dict[str, Any], workers: int, result) -> dict[str, Any]:
    row = {"model": model, "mode": mode, **layout, "workers": workers, "batch_size": result.config["batch_size"],
           "status": result.status}
    if not result.ok:
        return {**row, "reason": (result.error or "").strip().splitlines()[-1][:300]}
    s = result.summary
    return {**row, "threads": result.ranks[0].threads, "step_time_s": s["step_time_s"],
            "samples_per_s": s["samples_per_s"], "within_run_sd": s.get("within_run_sd"), "wall_samples_per_s": s.get("wall_samples_per_s"),
            **{k: s.get(k) for k in BREAKDOWN}, "energy_j": s.get("energy_j"), "samples_per_j": s.get("samples_per_j"),
            "energy_unmeasured": result.unmeasured.get("energy_j")}


def speedups(rows: list[dict[str, Any]]) -> None:
    """Each row's speed-up over single on one worker at the same mode, with its interval and
    verdict, by parakit's one rule (records/intervals.py: samples/s over samples/s, each with
    its run's noise), the ideal (the workers) and the efficiency (speed-up / ideal), in place."""
    from parakit.records.intervals import ratio, run_estimate

    def estimate(row: dict[str, Any]):
        return run_estimate(row["samples_per_s"], row.get("within_run_sd"))

    base = {(r["model"], r["mode"]): estimate(r) for r in rows if r["strategy"] == "single" and r["status"] == "ok"}
    for r in rows:
        single = base.get((r["model"], r["mode"]))
        r["ideal"] = r["workers"]
        found = ratio(estimate(r), single) if single and r["status"] == "ok" else None
        r["speedup"], r["speedup_low"], r["speedup_high"], r["verdict"] = (
            (found.ratio, found.low, found.high, found.verdict) if found else (None, None, None, None))
        r["efficiency"] = r["speedup"] / r["ideal"] if r["speedup"] is not None else None


class Runner:
    """Runs one case at a time on the session, within the budget, and keeps every row."""

    def __init__(self, session, args: argparse.Namespace, report: dict[str, Any], started: float):
        self.session, self.args, self.report, self.started = session, args, report, started

    def run(self, model: str, mode: str, layout: dict[str, Any], workers: int) -> dict[str, Any] | None:
        case = {"model": model, "mode": mode, **layout, "workers": workers}
        if time.monotonic() - self.started > self.args.budget_s:
            self.report["skipped"].append({**case, "reason": f"over the {self.args.budget_s:.0f} s budget"})
            return None
        settings = MODELS[model]
        try:
            result = self.session.run(settings["model"], model_options=settings["model_options"], workers=workers,
                                      batch_size=batch_for(model, mode, workers), steps=self.args.steps,
                                      warmup_steps=self.args.warmup_steps, **layout)
        except ValueError as e:  # a layout this model or size cannot take: said, and the curve goes on
            self.report["skipped"].append({**case, "reason": str(e)})
            return None
        row = row_of(model, mode, layout, workers, result)
        row["at_s"] = time.monotonic() - self.started
        self.report["rows"].append(row)
        print(format_row(row), flush=True)
        save(self.report, self.args)
        return row


def best_schedule(runner: Runner, model: str, workers: list[int]) -> str:
    """The pipeline schedule with the most samples/s at PROBE_WORKERS (or the most workers
    asked for, if fewer), strong batch; gpipe when none ran."""
    probe = min(PROBE_WORKERS, workers[-1])
    found = {}
    for schedule in SCHEDULES:
        row = runner.run(model, "probe", {"strategy": "pipeline", "schedule": schedule}, probe)
        if row and row["status"] == "ok":
            found[schedule] = row["samples_per_s"]
    best = max(found, key=found.get) if found else "gpipe"
    runner.report["schedules"][model] = {"probe_workers": probe, "samples_per_s": found, "best": best}
    return best


def measure(args: argparse.Namespace) -> dict[str, Any]:
    import parakit

    started = time.monotonic()
    report: dict[str, Any] = {
        "machine": machine.describe(), "date": machine.today(),
        "command": "python benchmarks/cpu_scaling.py " + " ".join(sys.argv[1:]), "cpu_count": os.cpu_count(),
        "workers": args.workers, "models": {m: MODELS[m] for m in args.models}, "weak_share": WEAK_SHARE,
        "rows": [], "skipped": [], "schedules": {},
    }
    with tempfile.TemporaryDirectory(prefix="parakit-cpu-scaling-") as runs_dir, \
            parakit.Session(workers=args.workers[-1], device="cpu", runs_dir=runs_dir, progress=False) as s:
        report["engine_start_s"] = time.monotonic() - started
        runner = Runner(s, args, report, started)
        for model in args.models:
            for mode in ("strong", "weak"):
                runner.run(model, mode, {"strategy": "single"}, 1)
            schedule = best_schedule(runner, model, args.workers)
            for mode in ("strong", "weak"):
                for workers in args.workers:
                    for strategy in STRATEGIES:
                        layout = {"strategy": strategy} | ({"schedule": schedule} if strategy == "pipeline" else {})
                        runner.run(model, mode, layout, workers)
    speedups(report["rows"])
    report["elapsed_s"] = time.monotonic() - started
    save(report, args)
    return report


def save(report: dict[str, Any], args: argparse.Namespace) -> None:
    """After every run, so a session cut short keeps what it measured."""
    paths = [Path(args.json)] + ([Path(os.environ["OUT"]) / "cpu_scaling.json"] if os.environ.get("OUT") else [])
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=1))


def figure(report: dict[str, Any]):
    """Speed-up against workers, one panel per model and mode, a line per strategy and the ideal."""
    from plotly.subplots import make_subplots

    models = list(report["models"])
    fig = make_subplots(rows=len(models), cols=2, subplot_titles=[f"{m}, {mode} scaling" for m in models
                                                                  for mode in ("strong", "weak")])
    workers = report["workers"]
    colours = {"ddp": "#1f77b4", "fsdp": "#ff7f0e", "pipeline": "#2ca02c"}
    for i, model in enumerate(models, start=1):
        for j, mode in enumerate(("strong", "weak"), start=1):
            first = i == 1 and j == 1  # one legend entry per line
            fig.add_scatter(x=workers, y=workers, mode="lines", line={"dash": "dash", "color": "grey"}, name="ideal",
                            showlegend=first, row=i, col=j)
            for strategy, colour in colours.items():
                rows = sorted((r for r in report["rows"] if r["model"] == model and r["mode"] == mode
                               and r["strategy"] == strategy and r.get("speedup") is not None), key=lambda r: r["workers"])
                name = strategy if strategy != "pipeline" else f"pipeline ({report['schedules'].get(model, {}).get('best', '-')})"
                fig.add_scatter(x=[r["workers"] for r in rows], y=[r["speedup"] for r in rows], mode="lines+markers",
                                line={"color": colour}, name=name if first else strategy, legendgroup=strategy,
                                showlegend=first, row=i, col=j)
            fig.update_xaxes(type="log", dtick=0.30103, title_text="CPU workers", row=i, col=j)
            fig.update_yaxes(type="log", dtick=0.30103, title_text="speed-up over single", row=i, col=j)
    fig.update_layout(width=900, height=350 * len(models), title=f"CPU scaling on {report['machine']}")
    return fig


def draw(report: dict[str, Any], json_path: str, figure_path: str) -> str | None:
    """The figure as plotly JSON beside the report, and as an image where kaleido can draw it;
    returns the image's path, or None and says why there is none."""
    fig = figure(report)
    Path(json_path).with_suffix(".figure.json").write_text(fig.to_json())
    from parakit.plots import static

    svg = static.svg_of(fig)
    if svg is None:
        print(f"no image drawn (no browser for kaleido here): the figure is in "
              f"{Path(json_path).with_suffix('.figure.json')}; draw it with --render-only {json_path}")
        return None
    Path(figure_path).parent.mkdir(parents=True, exist_ok=True)
    Path(figure_path).write_text(svg)
    return figure_path


def fmt(value, scale=1.0, spec=".1f") -> str:
    return "-" if value is None else format(value * scale, spec)


def format_row(r: dict[str, Any]) -> str:
    layout = r["strategy"] + (f"/{r['schedule']}" if "schedule" in r else "")
    head = f"{r['model']:>4} {r['mode']:>6} {layout:>20} x{r['workers']:<2} batch {r['batch_size']:>4}"
    if r["status"] != "ok":
        return f"{head}  {r['status']}: {r.get('reason', '')}"
    return (f"{head} {fmt(r['step_time_s'], 1e3):>8} ms {fmt(r['samples_per_s'], 1, ',.0f'):>9} samples/s "
            f"compute {fmt(r['compute_time_s'], 1e3)} ms, exposed comm {fmt(r['exposed_comm_time_s'], 1e3)} ms, "
            f"idle {fmt(r['idle_time_s'], 1e3)} ms, {fmt(r['samples_per_j'], 1, '.1f')} samples/J "
            f"({r['threads']} threads, at {r['at_s']:.0f} s)")


def summary_lines(report: dict[str, Any]) -> list[str]:
    lines = [f"{'model':>4} {'mode':>6} {'layout':>20} {'workers':>7} {'speed-up':>8} {'ideal':>5} {'efficiency':>10}"]
    for r in report["rows"]:
        if r["strategy"] == "single" or r["mode"] == "probe" or r.get("speedup") is None:
            continue
        layout = r["strategy"] + (f"/{r['schedule']}" if "schedule" in r else "")
        lines.append(f"{r['model']:>4} {r['mode']:>6} {layout:>20} {r['workers']:>7} {r['speedup']:>8.2f} "
                     f"{r['ideal']:>5} {r['efficiency']:>10.0%}")
    return lines


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.render_only:
        report = json.loads(Path(args.render_only).read_text())
        draw(report, args.render_only, args.figure)
        return report
    report = measure(args)
    print("\n".join(summary_lines(report)))
    for skipped in report["skipped"]:
        print(f"skipped {skipped['model']} {skipped['mode']} {skipped['strategy']} x{skipped['workers']}: "
              f"{skipped['reason']}")
    image = draw(report, args.json, args.figure)
    print(f"{len(report['rows'])} runs in {report['elapsed_s']:.0f} s on {report['machine']}"
          + (f"; figure: {image}" if image else ""))
    return report


if __name__ == "__main__":
    main()
