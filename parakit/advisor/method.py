"""How an advice predicted, in words: where its compute figures come from and every constant the
cost model assumed, by name and value, where a prediction used it. The advice carries this as
its ``method`` (and prints it in its summary), so a number that rests on an assumption says so.
Standard library only."""

from __future__ import annotations

from collections.abc import Iterable

from parakit.advisor.costs import (
    ADAMW_BYTES_PER_VALUE,
    BACKWARD_SHARE,
    GPU_LAYER_PASS_S,
    PRESET_LOOP_S,
    compute_source,
)
from parakit.advisor.hardware import PRESET_MFU, Hardware
from parakit.advisor.inputs import Calibration
from parakit.config.run import RunConfig, Strategy


def method_text(cal: Calibration, hw: Hardware, configs: Iterable[RunConfig]) -> str:
    """'compute from ...; assumed: NAME = value (what it stands for); ...' for predictions of
    ``configs`` on ``hw`` from ``cal`` (the branches of costs.rates, by ``compute_source``)."""
    source = compute_source(cal, hw)
    said = {
        "engines": "compute from the engines' own calibration runs, as measured",
        "peaks": f"compute from the calibration on {cal.device_name}, scaled to {hw.name} by the ratio of dense peaks",
        "flops": f"compute from the model's FLOPs at a share of {hw.name}'s dense peak",
    }[source]
    assumed = []
    if source == "flops":
        assumed.append(f"PRESET_MFU = {PRESET_MFU:g} (the share of the peak a model's matmuls reach)")
        if hw.device == "gpu":
            assumed.append(f"GPU_LAYER_PASS_S = {GPU_LAYER_PASS_S:g} s (kernel launches per layer per forward + backward)")
    if source != "engines":
        assumed += [
            f"PRESET_LOOP_S = {PRESET_LOOP_S:g} s (the loop's own work per step: reading the batch, bookkeeping)",
            f"ADAMW_BYTES_PER_VALUE = {ADAMW_BYTES_PER_VALUE} (the optimizer's memory traffic per parameter, "
            f"at {hw.memory_bandwidth_bytes_per_s:g} B/s)",
            "no layout overhead (what a layout adds on one worker is measured on the engines, not carried over)",
        ]
    if hw.device == "gpu" and any(c.strategy is Strategy.DDP and c.workers > 1 for c in configs):
        assumed.append(f"BACKWARD_SHARE = {BACKWARD_SHARE:.3g} (backward's share of a pass, which DDP's "
                       "bucket all-reduces overlap)")
    return f"{said}; " + (f"assumed: {'; '.join(assumed)}" if assumed else "no assumed constants")
