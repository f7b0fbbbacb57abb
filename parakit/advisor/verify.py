"""Predict, then measure: run the top configurations on the engines and set each run against its
prediction; take its measured speed-up by the package's one rule (the runs frame,
records/frame.py: samples/s against its 1-worker baseline, with the 95 % interval and verdict of
records/intervals.py), never by a division of the advisor's own; and draw the projection of the
top configurations with those measured points over them."""

from __future__ import annotations

import math
import statistics
from typing import Any

from parakit.advisor.calibrate import STATISTICS
from parakit.advisor.candidates import projection
from parakit.advisor.costs import Estimate, estimate, ratio_error
from parakit.config.prices import Prices
from parakit.records.result import RunResult, run_label
from parakit.records.store import read_runs, runs_frame

SPEEDUP = ("speedup", "speedup_low", "speedup_high")


def verify(session, base: dict[str, Any], estimates: list[Estimate], top: int, statistic: str,
           prices: Prices) -> list[dict[str, Any]]:
    """Run the ``top`` configurations the engines can run (in the ranking's order): predicted
    against measured step time, and each run's measured speed-up (``with_speedups``)."""
    runnable = [e for e in estimates if e.fits and e.step_time_s is not None and e.settings["workers"] <= session.workers]
    out = []
    for e in runnable[:top]:
        result = session.run(**base, **e.settings, prices=prices)
        measured = getattr(result.summary, STATISTICS[statistic]) if result.ok else None
        out.append({"label": run_label(e.settings), "settings": e.settings, "predicted_step_time_s": e.step_time_s,
                    "measured_step_time_s": measured, "statistic": statistic, "run_id": result.run_id,
                    "status": result.status, "error": ratio_error(e.step_time_s, measured) if measured else None})
    # The whole store, as Session.runs() reads it: a run's speed-up is the same wherever it is shown.
    return with_speedups(out, read_runs(session.runs_dir)) if out else out


def with_speedups(verified: list[dict[str, Any]], runs: list[RunResult]) -> list[dict[str, Any]]:
    """Each verification with its run's speed-up as the runs frame has it among ``runs``:
    ``speedup``, ``speedup_low``, ``speedup_high``, ``verdict``, ``baseline`` (the run ids it is
    taken against) and ``baseline_step_time_s``; or ``missing_baseline`` (which run would give
    it one). The frame takes samples/s of each run's median step, whatever ``statistic`` the
    advice compares step times by."""
    frame = runs_frame(runs).set_index("run_id")
    out = []
    for v in verified:
        row = frame.loc[v["run_id"]] if v["run_id"] in frame.index else None
        found: dict[str, Any] = {}
        if row is not None and isinstance(row["speedup"], float) and math.isfinite(row["speedup"]):
            baseline = str(row["baseline"]).split(",")
            found = {name: float(row[name]) for name in SPEEDUP}
            found.update(verdict=row["verdict"] if isinstance(row["verdict"], str) else None, baseline=baseline,
                         baseline_step_time_s=statistics.median(float(t) for t in frame.loc[baseline, "step_time_s"]))
        elif row is not None and isinstance(row["missing_baseline"], str):
            found["missing_baseline"] = row["missing_baseline"]
        out.append({**v, **found})
    return out


def projections(base: dict[str, Any], top: int, project_to: int, shape, cal, hw, estimates: list[Estimate],
                verified: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Predicted speed-up curves of the ``top`` configurations (distinct layouts), with the
    points measured on the engines (``measured_points``)."""
    seen, out = set(), []

    def predict(settings, config):
        return estimate(config, shape, cal, hw, settings)

    for e in estimates:
        if len(out) == top or not e.fits or e.step_time_s is None:
            continue
        layout = {k: v for k, v in e.settings.items() if k != "workers"}  # the curve spans worker counts
        if tuple(sorted(layout.items())) in seen:
            continue
        seen.add(tuple(sorted(layout.items())))
        points, stopped = projection(e.settings, base, project_to, predict)
        out.append({"label": run_label(layout), "settings": e.settings, "points": points, "stopped": stopped,
                    "measured": measured_points(e.settings, cal, hw, verified)})
    return out


def measured_points(settings: dict[str, Any], cal, hw, verified: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """On the engines the prediction is for: a verified configuration's run at its speed-up by
    the runs frame's rule, with its interval and verdict, over its baseline at 1; else the
    calibration's one-worker run at its precision (1 by definition). Matched by settings."""
    if not hw.calibrated:
        return []
    v = next((v for v in verified if v["settings"] == settings and v["measured_step_time_s"]), None)
    if v is not None and v.get("speedup") is not None:
        run = {"workers": settings["workers"], **{k: v[k] for k in SPEEDUP}, "verdict": v["verdict"],
               "step_time_s": v["measured_step_time_s"], "run_id": v["run_id"]}
        baseline = {"workers": 1, "speedup": 1.0, "step_time_s": v["baseline_step_time_s"],
                    "run_id": ",".join(v["baseline"])}
        return [run] if settings["workers"] == 1 else [baseline, run]
    precision = settings["precision"]
    one = cal.single_step_s.get(precision)
    role = "single" if precision == "fp32" else f"precision:{precision}"
    return [{"workers": 1, "speedup": 1.0, "step_time_s": one, "run_id": cal.runs.get(role)}] if one else []

