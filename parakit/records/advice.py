"""What ``parakit.advise`` returns: the ranked estimates, the verification (predicted against
measured) and the projections, as one record saved in the run store under ``advice/`` (JSON,
like runs; the verifying runs themselves are saved as runs).

A record, so it lives here: the figures of an advice (plots/advisor.py) read it without
importing the cost model. The cost model's own types (``advisor.costs.Estimate``,
``advisor.hardware.Hardware``, ``advisor.inputs.Calibration``) are read by attribute only.
"""

from __future__ import annotations

import os
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from parakit.config.prices import usd_text
from parakit.config.shape import ModelShape
from parakit.records.intervals import speedup_text
from parakit.records.result import run_label
from parakit.records.store import (
    _write,  # the store's atomic write-then-rename, shared by every record
)

if TYPE_CHECKING:
    import pandas

ADVICE_DIR = "advice"


@dataclass
class Advice:
    """The advisor's answer for one model, worker count and hardware."""

    advice_id: str
    created_at: str
    workers: int
    hardware: Any
    """The hardware predicted for (an ``advisor.hardware.Hardware``)."""
    shape: ModelShape
    calibration: Any
    """What the engines measured (an ``advisor.inputs.Calibration``)."""
    estimates: list[Any]
    """Every candidate (``advisor.costs.Estimate``), fastest (or cheapest, by ``rank_by``)
    first; those that do not fit, or have no estimate, last."""
    refused: list[tuple[dict[str, Any], str]] = field(default_factory=list)
    """Configurations the settings do not allow, and why."""
    verified: list[dict[str, Any]] = field(default_factory=list)
    """Per verified configuration: label, settings, predicted_step_time_s, measured_step_time_s,
    error (|predicted - measured| / measured), run_id, status; and its measured speed-up by the
    runs frame's rule (records/frame.py): speedup, speedup_low, speedup_high, verdict and the
    baseline run ids, or missing_baseline where it has none."""
    projections: list[dict[str, Any]] = field(default_factory=list)
    """Per top configuration: label, settings, points (workers, speedup, efficiency, ...), stopped
    (why the curve ends early, or None), measured (points measured on the engines)."""
    rank_by: str = "time"
    """What the estimates are ranked by: "time" or "cost" (per 1000 samples)."""
    cost_method: str = ""
    """How ``cost_per_1k_samples_usd`` was predicted (the price and its source), or why it is None."""
    method: str = ""
    """How the step times were predicted, naming each constant the cost model assumed where a
    prediction used it (advisor/costs.py ``method_text``)."""

    @property
    def best(self) -> Any:
        """The first choice: the fastest (or cheapest, by ``rank_by``) configuration that fits."""
        return next((e for e in self.estimates if e.fits and e.step_time_s is not None), None)

    @property
    def median_error(self) -> float | None:
        errors = [v["error"] for v in self.verified if v.get("error") is not None]
        return statistics.median(errors) if errors else None

    def verification_of(self, settings: dict[str, Any]) -> dict[str, Any] | None:
        """The verification of the configuration with these settings, or None: matched by its
        settings, not by its label."""
        return next((v for v in self.verified if v["settings"] == settings), None)

    def frame(self) -> pandas.DataFrame:
        """One row per candidate, ranked: predicted figures, and measured where verified."""
        import pandas as pd

        rows = []
        for i, e in enumerate(self.estimates, start=1):
            seen = self.verification_of(e.settings) or {}
            rows.append({
                "rank": i if e.fits else None, "configuration": run_label(e.settings), "fits": e.fits,
                "step_time_ms": _ms(e.step_time_s), "samples_per_s": e.samples_per_s,
                "exposed_comm_ms": _ms(e.exposed_comm_time_s), "bubble": e.bubble,
                "memory_mib": e.memory_bytes / 2**20 if e.memory_bytes is not None else None,
                "collective_mib_per_step": (e.collective_bytes_per_step / 2**20
                                            if e.collective_bytes_per_step is not None else None),
                "cost_per_1k_samples_usd": e.cost_per_1k_samples_usd,
                "measured_step_time_ms": _ms(seen.get("measured_step_time_s")),
                "error": seen.get("error"), "reason": e.reason,
            })
        return pd.DataFrame(rows)

    def to_dict(self) -> dict[str, Any]:
        return {
            "advice_id": self.advice_id, "created_at": self.created_at, "workers": self.workers,
            "hardware": asdict(self.hardware), "shape": self.shape.to_dict(),
            "calibration": self.calibration.to_dict(), "estimates": [asdict(e) for e in self.estimates],
            "refused": [{"settings": s, "reason": r} for s, r in self.refused],
            "verified": self.verified, "projections": self.projections,
            "rank_by": self.rank_by, "cost_method": self.cost_method, "method": self.method,
        }

    def summary(self) -> str:
        """A few lines: the first choice, how many fit, what was assumed, and the verification's
        error and measured speed-ups."""
        best = self.best
        order, upto = ("cheapest", "up to ") if self.rank_by == "cost" else ("fastest", "")
        lines = [(f"{self.advice_id}: {len(self.estimates)} configurations of {self.shape.name} on "
                 f"{upto}{self.workers} worker(s), {self.hardware.name}, {order} first")]
        if best is not None:
            cost = best.cost_per_1k_samples_usd
            lines.append(f"first choice: {run_label(best.settings)}: {best.step_time_s * 1e3:.1f} ms per step, "
                         f"{best.samples_per_s:.1f} samples/s, {best.memory_bytes / 2**20:.0f} MiB per rank"
                         + (f", {usd_text(cost)} per 1k samples" if cost is not None else ""))
        if self.method:
            lines.append(f"method: {self.method}")
        if self.cost_method:
            lines.append(f"cost: {self.cost_method}")
        unfit = sum(1 for e in self.estimates if not e.fits)
        if unfit:
            lines.append(f"{unfit} do not fit or have no estimate (see the reason column)")
        lines += [_verified_line(v) for v in self.verified]
        if self.median_error is not None:
            lines.append(f"median error {self.median_error:.0%} over {len(self.verified)} verified")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.summary()

    def _repr_html_(self) -> str:
        return self.frame().to_html(index=False, float_format=lambda v: f"{v:.4g}", na_rep="")


def _verified_line(v: dict[str, Any]) -> str:
    """'verified ddp x2: predicted 12.0 ms, measured 13.1 ms (8% off), run ID; 2 workers: 1.54x
    (1.31-1.81) against run ID': the speed-up, where measured, with its interval (records/intervals.py)."""
    measured = v["measured_step_time_s"]
    line = f"verified {v['label']}: predicted {v['predicted_step_time_s'] * 1e3:.1f} ms, "
    if measured is None:
        return line + f"{v['status']}"
    line += f"measured {measured * 1e3:.1f} ms ({v['error']:.0%} off), run {v['run_id']}"
    if v.get("speedup") is not None:
        line += (f"; {speedup_text(v['settings']['workers'], v['speedup'], v['speedup_low'], v['speedup_high'])}"
                 f" against run {', '.join(v['baseline'])}")
    return line


def save_advice(advice: Advice, runs_dir: str | os.PathLike) -> Path:
    """Write the record to ``runs_dir/advice/<advice_id>.json`` atomically."""
    return _write(Path(runs_dir) / ADVICE_DIR, advice.advice_id, advice.to_dict())


def _ms(seconds: float | None) -> float | None:
    return seconds * 1e3 if seconds is not None else None
