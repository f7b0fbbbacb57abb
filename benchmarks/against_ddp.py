"""A layout against ddp on the same model, side by side: what layouts_moe.py and
layouts_context.py share. Rounds alternate the two on the same engines (ddp first in odd
rounds, the layout first in even ones), so a drift of the machine falls on both alike; the
repeats are compared by parakit.compare (records/intervals.py: the one rule, with its
interval and verdict)."""

from __future__ import annotations

import platform
import statistics
import tempfile
from datetime import datetime, timezone
from typing import Any

import parakit


def alternate(layout: str, size: dict[str, int], rounds: int, steps: int, batch: int, workers: int,
              device: str) -> tuple[dict[str, list], list[dict[str, Any]]]:
    """Runs of ddp and ``layout`` by strategy, and one row per round: each one's step time and
    the layout's over ddp's. A failed run stops the benchmark, saying which."""
    runs: dict[str, list] = {"ddp": [], layout: []}
    rows = []
    with tempfile.TemporaryDirectory() as folder, parakit.Session(workers, device=device, runs_dir=folder,
                                                                  progress=False) as session:
        for i in range(rounds):
            order = ("ddp", layout) if i % 2 == 0 else (layout, "ddp")
            for strategy in order:
                r = session.run(model="gpt", model_options=size, strategy=strategy, workers=workers, steps=steps,
                                batch_size=batch, warmup_steps=3, seed=0)
                if not r.ok:
                    raise SystemExit(f"{strategy} failed: {r.error}")
                runs[strategy].append(r)
            ddp, other = runs["ddp"][-1].summary, runs[layout][-1].summary
            rows.append({"round": i, "first": order[0], "ddp_step_ms": ddp["step_time_s"] * 1e3,
                         f"{layout}_step_ms": other["step_time_s"] * 1e3,
                         f"{layout}_over_ddp": other["step_time_s"] / ddp["step_time_s"]})
    return runs, rows


def median_figure(runs: list, name: str) -> float | None:
    """A summary figure's median over the repeats that measured it; None where none did."""
    values = [r.summary.get(name) for r in runs if r.summary.get(name) is not None]
    return statistics.median(values) if values else None


def median_ms(runs: list, name: str) -> float | None:
    """A time figure (seconds) as median_figure gives it, in milliseconds."""
    seconds = median_figure(runs, name)
    return None if seconds is None else seconds * 1e3


def record(layout: str, runs: dict[str, list], rows: list[dict[str, Any]], layouts: dict[str, Any], *,
           size: dict[str, int], workers: int, batch: int, steps: int, device: str) -> dict[str, Any]:
    """The benchmark's JSON: where and what it ran, the rounds, each layout's figures, the layout's
    step time over ddp's (median of the rounds) and its throughput over ddp's with the interval."""
    import torch

    cmp = parakit.compare(runs[layout], runs["ddp"])
    return {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": platform.node(),
            "processor": platform.processor() or platform.machine(), "torch": torch.__version__, "device": device,
            "model_options": size, "workers": workers, "batch_size": batch, "steps": steps, "rounds": rows,
            "layouts": layouts, f"{layout}_over_ddp_step": statistics.median(r[f"{layout}_over_ddp"] for r in rows),
            "compare": {"throughput_ratio": cmp.ratio, "low": cmp.low, "high": cmp.high, "verdict": cmp.verdict}}
