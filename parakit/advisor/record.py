"""What ``advise`` returns: the ranked estimates, the verification (predicted against measured)
and the projections, as one record saved in the run store under ``advice/`` (JSON, like runs;
the verifying runs themselves are saved as runs)."""

from __future__ import annotations

import os
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from parakit.advisor.candidates import label
from parakit.advisor.costs import Estimate
from parakit.advisor.hardware import Hardware
from parakit.advisor.inputs import Calibration
from parakit.config.prices import usd_text
from parakit.config.shape import ModelShape
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
    hardware: Hardware
    shape: ModelShape
    calibration: Calibration
    estimates: list[Estimate]
    """Every candidate, fastest (or cheapest, by ``rank_by``) first; those that do not fit, or
    have no estimate, last."""
    refused: list[tuple[dict[str, Any], str]] = field(default_factory=list)
    """Configurations the settings do not allow, and why."""
    verified: list[dict[str, Any]] = field(default_factory=list)
    """Per verified configuration: label, settings, predicted_step_time_s, measured_step_time_s,
    error (|predicted - measured| / measured), run_id, status."""
    projections: list[dict[str, Any]] = field(default_factory=list)
    """Per top configuration: label, settings, points (workers, speedup, efficiency, ...), stopped
    (why the curve ends early, or None), measured (points measured on the engines)."""
    rank_by: str = "time"
    """What the estimates are ranked by: "time" or "cost" (per 1000 samples)."""
    cost_method: str = ""
    """How ``cost_per_1k_samples_usd`` was predicted (the price and its source), or why it is None."""

    @property
    def best(self) -> Estimate | None:
        """The first choice: the fastest (or cheapest, by ``rank_by``) configuration that fits."""
        return next((e for e in self.estimates if e.fits and e.step_time_s is not None), None)

    @property
    def median_error(self) -> float | None:
        errors = [v["error"] for v in self.verified if v.get("error") is not None]
        return statistics.median(errors) if errors else None

    def frame(self) -> pandas.DataFrame:
        """One row per candidate, ranked: predicted figures, and measured where verified."""
        import pandas as pd

        measured = {v["label"]: v for v in self.verified}
        rows = []
        for i, e in enumerate(self.estimates, start=1):
            name = label(e.settings)
            seen = measured.get(name, {})
            rows.append({
                "rank": i if e.fits else None, "configuration": name, "fits": e.fits,
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
            "rank_by": self.rank_by, "cost_method": self.cost_method,
        }

    def summary(self) -> str:
        """A few lines: the first choice, how many fit, and the verification's error."""
        best = self.best
        order, upto = ("cheapest", "up to ") if self.rank_by == "cost" else ("fastest", "")
        lines = [(f"{self.advice_id}: {len(self.estimates)} configurations of {self.shape.name} on "
                 f"{upto}{self.workers} worker(s), {self.hardware.name}, {order} first")]
        if best is not None:
            cost = best.cost_per_1k_samples_usd
            lines.append(f"first choice: {label(best.settings)}: {best.step_time_s * 1e3:.1f} ms per step, "
                         f"{best.samples_per_s:.1f} samples/s, {best.memory_bytes / 2**20:.0f} MiB per rank"
                         + (f", {usd_text(cost)} per 1k samples" if cost is not None else ""))
        if self.cost_method:
            lines.append(f"cost: {self.cost_method}")
        unfit = sum(1 for e in self.estimates if not e.fits)
        if unfit:
            lines.append(f"{unfit} do not fit or have no estimate (see the reason column)")
        for v in self.verified:
            measured = v["measured_step_time_s"]
            lines.append(f"verified {v['label']}: predicted {v['predicted_step_time_s'] * 1e3:.1f} ms, "
                         + (f"measured {measured * 1e3:.1f} ms ({v['error']:.0%} off), run {v['run_id']}"
                            if measured is not None else f"{v['status']}"))
        if self.median_error is not None:
            lines.append(f"median error {self.median_error:.0%} over {len(self.verified)} verified")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.summary()

    def _repr_html_(self) -> str:
        return self.frame().to_html(index=False, float_format=lambda v: f"{v:.4g}", na_rep="")


def save_advice(advice: Advice, runs_dir: str | os.PathLike) -> Path:
    """Write the record to ``runs_dir/advice/<advice_id>.json`` atomically."""
    return _write(Path(runs_dir) / ADVICE_DIR, advice.advice_id, advice.to_dict())


def _ms(seconds: float | None) -> float | None:
    return seconds * 1e3 if seconds is not None else None
