"""What the cost model is given besides the model's shape (config/shape.py): a calibration,
measured on the current engines. Plain data, JSON in and out; standard library only.

Times in a calibration are the engines' own, at their thread count, for precision fp32 unless
a name says otherwise; ``advisor/costs.py`` scales them to other precisions and hardware.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass(frozen=True, kw_only=True)
class Calibration:
    """What the engines measured, the inputs of every prediction on them.

    A step of one worker on ``rows`` rows is modelled as
    ``step_fixed_s + pass_fixed_s + per_row_s * rows`` at fp32; at another precision the
    per-row part is ``precision_scale[precision]`` times as long.
    """

    device: str
    """cpu or gpu."""
    model: str = ""
    """The model the runs trained, with its options ('gpt depth=4 width=64 ...'): the figures
    are that model's."""
    device_name: str
    engine_count: int
    """Engines that were running: on a CPU, they share its cores."""
    threads_per_rank: int | None
    batch_size: int
    statistic: str = "median"
    """Which step time of each run the figures come from: its median step or its fastest."""
    pass_fixed_s: float
    """A forward + backward call's cost whatever its rows (dispatch, launches)."""
    per_row_s: float
    """A forward + backward's cost per row of the whole model."""
    step_fixed_s: float
    """The rest of a step: optimizer, zeroing, reading the batch, the loop's bookkeeping."""
    precision_scale: Mapping[str, float] = field(default_factory=dict)
    """Per-row compute time at a precision / at fp32, where a run measured it."""
    single_step_s: Mapping[str, float] = field(default_factory=dict)
    """The measured step of one worker (strategy single) over the batch, per precision."""
    peak_tflops: Mapping[str, float] = field(default_factory=dict)
    """The engines' dense peak per precision (config/formulas.py's table; {} for CPUs): other
    precisions, and other GPUs, are scaled by the ratio of peaks."""
    contention: float = 1.0
    """Compute slowdown when every engine computes at once (shared cores, memory bandwidth);
    1.0 on GPUs, each with its own."""
    overheads_s: Mapping[str, float] = field(default_factory=dict)
    """What a layout or lever adds on one worker beyond single's step: per step for 'ddp:none',
    'ddp:powersgd:4', ..., 'fsdp', 'tensor'; per stage-chunk (one stage's forward + backward
    of one micro-batch) for 'pipeline:gpipe', 'pipeline:1f1b', 'pipeline:interleaved'."""
    collectives: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    """The communication benchmark's fits: collective -> {alpha_s, beta_bytes_per_s}."""
    comm_world: int = 2
    memory_baseline_bytes: float = 0.0
    """What a rank's process holds beyond the model (the runtime): peak RSS on CPUs."""
    memory_bytes: float | None = None
    """Memory each rank may use on these engines."""
    failed: Mapping[str, str] = field(default_factory=dict)
    """Per calibration run that gave no figure ('precision:bf16', 'tensor', ...), why."""
    runs: Mapping[str, str] = field(default_factory=dict)
    """The runs the figures come from, in the run store, by what each is for ('single', 'half',
    'accumulate', 'precision:bf16', 'ddp:none', 'pipeline:1f1b', 'contention', ...)."""
    bench_id: str | None = None
    """The communication benchmark the links come from (in the store's comm-bench/)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Calibration:
        if "engines" in d and "engine_count" not in d:  # its name in calibrations saved before 0.2
            d = {("engine_count" if k == "engines" else k): v for k, v in d.items()}
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"calibration has no field {unknown[0]!r}")
        values = dict(d)
        try:
            return cls(**values)
        except TypeError as e:  # a required figure missing
            raise ValueError(f"not a calibration: {e}") from None

    def scale(self, precision: str) -> float:
        return self.precision_scale.get(precision, 1.0 if precision == "fp32" else float("nan"))
