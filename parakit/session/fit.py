"""What fits: for each layout, the largest depth, width or batch size whose measured memory per
rank stays under a limit, found with short real runs (``Session.fit`` is the entry point).

The search doubles the value until a run does not fit, then bisects between the last that fit
and the first that did not. Each try is a run of ``FIT_STEPS`` steps, saved like any run.
What "memory per rank" means depends on the device, and the result says which:

- on a GPU, the allocator's peak (``max_memory_allocated``), with the limit enforced by
  ``set_per_process_memory_fraction``: a run over it fails with a real out-of-memory;
- on a CPU, the tensors the run measured on the rank that holds the most: parameters +
  gradients + optimizer state + activations saved for backward. Not the process's RSS, which
  holds the interpreter, torch and the allocator's caches, none of which a layout changes.

Beside each measurement is the advisor's prediction for the same run (its memory model).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from parakit.config.fit import FIT_STEPS, MAX_TRIES, FitRequest, check_fit
from parakit.config.run import RunConfig
from parakit.records.memory import PARTS, measured_memory_per_rank
from parakit.records.result import RunResult, run_label
from parakit.session.progress import StatusLine, size_text

PART_NAMES = {"param_bytes": "parameters", "gradient_bytes": "gradients",
              "optimizer_bytes": "optimizer state", "activation_bytes": "activations"}
CPU_MEASURE = "tensors per rank: parameters + gradients + optimizer state + activations (CPU; not RSS)"
GPU_MEASURE = "peak allocated per rank (torch.cuda.max_memory_allocated), limit enforced on the GPU"


@dataclass
class FitTry:
    """One run of the search."""

    value: int
    fits: bool
    bytes: int | None
    """Memory per rank as measured (see the module's doc), the rank that holds the most."""
    parts: dict[str, int | None]
    """That rank's parameters, gradients, optimizer state and activations (bytes)."""
    predicted: int | None
    """The advisor's memory model for the same run, the same parts summed."""
    run_id: str
    error: str | None = None


@dataclass
class FitLayout:
    """One layout's search: its tries, and the largest value that fit (None: not even the first)."""

    label: str
    settings: dict[str, Any]
    tries: list[FitTry] = field(default_factory=list)
    largest: int | None = None
    why: str | None = None
    """Why the search ended without an answer (a run failed for another reason than memory)."""

    @property
    def at_largest(self) -> FitTry | None:
        return next((t for t in self.tries if t.fits and t.value == self.largest), None)


@dataclass
class FitResult:
    """``Session.fit``'s answer: per layout, the largest value of ``vary`` under the limit
    (``parakit.plots.fit_figure`` draws it)."""

    vary: str
    memory_limit: int
    measure: str
    """What was compared with the limit (CPU_MEASURE or GPU_MEASURE)."""
    layouts: list[FitLayout]

    def table(self):
        """One row per layout: the largest value, the memory at it (measured and predicted) and
        its parts, in MiB."""
        import pandas as pd

        rows = []
        for layout in self.layouts:
            best = layout.at_largest
            mib = lambda v: None if v is None else v / 2**20  # noqa: E731
            rows.append({
                "layout": layout.label, f"largest {self.vary}": layout.largest,
                "MiB per rank": mib(best.bytes) if best else None,
                "predicted MiB": mib(best.predicted) if best else None,
                **{PART_NAMES[k]: mib(best.parts.get(k)) if best else None for k in PARTS},
                "tries": len(layout.tries), "note": layout.why or "",
            })
        return pd.DataFrame(rows)

    def _repr_html_(self) -> str:
        return (f"<p>largest {self.vary} under {size_text(self.memory_limit)} per rank ({self.measure})</p>"
                + self.table().to_html(index=False, float_format=lambda v: f"{v:.1f}", na_rep="-"))


def run_fit(session: Any, model: Any, vary: str, memory_limit: Any, strategies: Any, workers: int | None,
            start: int | None, high: int | None, settings: dict[str, Any]) -> FitResult:
    """The search (see the module's doc); every layout is checked before the first run."""
    workers = session.workers if workers is None else workers
    request = check_fit(model, vary, memory_limit, strategies, workers, start, high, settings)
    for layout in request.layouts:  # against these engines too, before any run
        session.config(**_settings(request, model, workers, layout, request.start, settings))
    measure = GPU_MEASURE if session.gpus and settings.get("device") != "cpu" else CPU_MEASURE
    layouts = []
    for layout in request.layouts:
        line = StatusLine()  # one line per layout: its tries while it searches, then its answer
        found = FitLayout(_label(layout, model, workers), layout)
        _search(session, request, model, workers, layout, settings, found, line)
        line.end(_said(found, request))
        layouts.append(found)
    return FitResult(vary, request.memory_limit, measure, layouts)


def _search(session, request: FitRequest, model, workers, layout, settings, found: FitLayout, line) -> None:
    def attempt(value: int) -> bool | None:
        line.show(f"fit {found.label}: {request.vary} {value} (try {len(found.tries) + 1})", force=True)
        tried = _try(session, request, model, workers, layout, value, settings)
        found.tries.append(tried)
        if tried.error is not None and not tried.fits and tried.bytes is None and not _out_of_memory(tried.error):
            found.why = f"{request.vary}={value}: {tried.error.splitlines()[0]}"
            return None
        return tried.fits

    lo, hi = None, None
    value = request.start
    while len(found.tries) < MAX_TRIES and value <= request.high:  # doubling
        fits = attempt(value)
        if fits is None:
            break
        if not fits:
            hi = value
            break
        lo, value = value, _on_unit(value * 2, request.unit)
    while found.why is None and lo is not None and hi is not None and len(found.tries) < MAX_TRIES:
        mid = _on_unit((lo + hi) // 2, request.unit)  # bisection between fit and did not
        if mid <= lo:
            break
        fits = attempt(mid)
        if fits is None:
            break
        lo, hi = (mid, hi) if fits else (lo, mid)
    found.largest = lo


def _try(session, request: FitRequest, model, workers, layout, value: int, settings) -> FitTry:
    run = _settings(request, model, workers, layout, value, settings)
    result = session.run(on_progress=_quiet, **run)
    measured, parts = measured_memory_per_rank(result.ranks or [])
    predicted = predicted_bytes(session.config(**run))
    fits = result.ok and measured is not None and measured <= request.memory_limit
    error = None if result.ok else (result.error or result.status)
    if result.ok and measured is None:
        error = result.unmeasured.get("activation_bytes") or "the run measured no memory per rank"
    return FitTry(value, fits, measured, parts, predicted, result.run_id, error)


def _settings(request: FitRequest, model, workers, layout, value: int, settings) -> dict[str, Any]:
    out = {**settings, **layout, "model": model, "steps": FIT_STEPS, "warmup_steps": 1,
           "workers": 1 if layout.get("strategy") == "single" else workers, "memory_limit": request.memory_limit}
    if request.vary == "batch_size":
        out["batch_size"] = value
    else:
        out["model_options"] = {**settings.get("model_options", {}), request.vary: value}
    return out


def predicted_bytes(config: RunConfig) -> int | None:
    """The advisor's memory model for ``config``: parameters + gradients + optimizer state +
    activations of the fullest rank (None where the model's shape cannot be found)."""
    from parakit.config.memory_model import memory_per_rank
    from parakit.engine.shape import model_shape

    try:
        shape = model_shape(config)
    except Exception:  # noqa: BLE001 - a prediction is a comparison, never a reason to fail the search
        return None
    m = memory_per_rank(config, shape, 0.0)
    return int(m["params"] + m["gradients"] + m["optimizer"] + m["activations"])


def _quiet(progress: dict) -> None:
    """A fit's runs show no progress of their own: the search's one line says what it tries."""


def _out_of_memory(error: str) -> bool:
    return "out of memory" in error.lower()


def _on_unit(value: int, unit: int) -> int:
    return max(unit, value // unit * unit)


def _label(layout: dict[str, Any], model: Any, workers: int) -> str:
    strategy = layout.get("strategy", RunConfig().strategy.value)
    return run_label({**layout, "model": model}, 1 if strategy == "single" else workers)


def _said(found: FitLayout, request: FitRequest) -> str:
    best = found.at_largest
    if found.largest is None:
        return f"fit {found.label}: even {request.vary}={request.start} does not fit" + (
            f" ({found.why})" if found.why else "")
    text = (f"fit {found.label}: largest {request.vary} {found.largest}, "
            f"{size_text(round(best.bytes / 2**20, 1) * 2**20)} per rank")
    if best.predicted is not None:
        text += f" (predicted {size_text(round(best.predicted / 2**20, 1) * 2**20)})"
    return text + (f"; stopped: {found.why}" if found.why else "")

