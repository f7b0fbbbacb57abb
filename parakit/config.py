"""What a run is: enums and frozen dataclasses that check themselves.

This layer is standard library only, so every mistake in a run's settings is found in the
notebook's process, before an engine is started or touched.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


class Choice(str, enum.Enum):
    """A string enum whose parse error lists the allowed values."""

    @classmethod
    def parse(cls, value: Any, what: str) -> "Choice":
        if isinstance(value, cls):
            return value
        try:
            return cls(str(value).strip().lower())
        except ValueError:
            allowed = ", ".join(m.value for m in cls)
            raise ValueError(f"{what} must be one of {allowed} (got {value!r})") from None

    def __str__(self) -> str:
        return self.value


class Strategy(Choice):
    SINGLE = "single"  # one engine, no process group
    DDP = "ddp"  # DistributedDataParallel: full replica per rank, gradients all-reduced


class Precision(Choice):
    FP32 = "fp32"


class Device(Choice):
    AUTO = "auto"  # a GPU per engine when this torch and machine have one, else CPU
    CPU = "cpu"
    CUDA = "cuda"


class Workload(Choice):
    MLP = "mlp"
    CNN = "cnn"
    GPT = "gpt"


# Options each built-in model accepts, with their defaults (small enough for a 2-core CPU).
MODEL_OPTIONS: dict[Workload, dict[str, int]] = {
    Workload.MLP: {"width": 512, "depth": 4, "in_features": 256, "classes": 10},
    Workload.CNN: {"channels": 32, "classes": 10},
    Workload.GPT: {"width": 128, "depth": 2, "heads": 4, "seq_len": 64},
}


def _check_int(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer (got {value!r})")
    if value < low:
        raise ValueError(f"{name} must be >= {low} (got {value})")


def check_model_options(model: Workload, options: Mapping[str, Any]) -> None:
    """Raise ValueError for an option the built-in model does not have or a bad value."""
    allowed = MODEL_OPTIONS[model]
    for key, value in options.items():
        if key not in allowed:
            raise ValueError(
                f"model {model.value} has no option {key!r}; options: {', '.join(allowed)}"
            )
        _check_int(f"model option {key}", value, 1)
    if model is Workload.GPT:
        merged = {**allowed, **options}
        if merged["width"] % merged["heads"]:
            raise ValueError(
                f"gpt width ({merged['width']}) must be divisible by heads ({merged['heads']})"
            )


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    """One training run: what to train, how, and for how long."""

    model: str | Callable[[], Any] = "mlp"
    """A built-in model name (mlp, cnn, gpt) or a zero-argument callable returning an nn.Module."""
    model_options: Mapping[str, int] = field(default_factory=dict)
    """Sizes of a built-in model, e.g. {"width": 256, "depth": 4} (see MODEL_OPTIONS)."""
    data: Any = None
    """None (the built-in model's own data), a callable (step, global_batch_size) -> (inputs,
    targets) giving the global batch of a step, or a torch Dataset."""
    loss: Callable[[Any, Any], Any] | None = None
    """A callable (outputs, targets) -> scalar; cross-entropy when None."""
    strategy: Strategy = Strategy.DDP
    """How the work is split across workers."""
    workers: int = 1
    """Number of ranks (engines) taking part."""
    precision: Precision = Precision.FP32
    """Numeric format of the training step."""
    steps: int = 20
    """Optimizer steps to run, warm-up included."""
    warmup_steps: int = 2
    """First steps recorded but left out of the summary (allocator, caches, lazy init)."""
    batch_size: int = 64
    """Global batch size: the same at every world size, split evenly over data-parallel ranks."""
    lr: float = 1e-3
    """AdamW learning rate."""
    seed: int = 0
    """Seed for weights and data; the same seed gives the same run at any world size."""

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: normalise strings to enums once, here
        set_(self, "strategy", Strategy.parse(self.strategy, "strategy"))
        set_(self, "precision", Precision.parse(self.precision, "precision"))
        if isinstance(self.model, str):
            set_(self, "model", Workload.parse(self.model, "model").value)
            check_model_options(Workload(self.model), self.model_options)
        elif not callable(self.model):
            raise ValueError(
                "model must be mlp, cnn, gpt or a zero-argument callable returning an nn.Module"
            )
        elif self.model_options:
            raise ValueError("model_options apply to built-in models only; size your own model")
        if self.data is None and not isinstance(self.model, str):
            raise ValueError("a model of your own needs data=: a callable or a Dataset")
        if self.loss is not None and not callable(self.loss):
            raise ValueError("loss must be a callable (outputs, targets) -> scalar tensor")
        _check_int("workers", self.workers, 1)
        _check_int("steps", self.steps, 1)
        _check_int("warmup_steps", self.warmup_steps, 0)
        _check_int("batch_size", self.batch_size, 1)
        _check_int("seed", self.seed, 0)
        if self.warmup_steps >= self.steps:
            raise ValueError(
                f"warmup_steps ({self.warmup_steps}) must be smaller than steps ({self.steps})"
            )
        if not isinstance(self.lr, (int, float)) or not self.lr > 0:
            raise ValueError(f"lr must be a positive number (got {self.lr!r})")
        if self.strategy is Strategy.SINGLE and self.workers != 1:
            raise ValueError(
                f"strategy single runs on 1 worker (got workers={self.workers}); "
                "use strategy ddp for more"
            )
        if self.batch_size % self.workers:
            raise ValueError(
                f"batch_size {self.batch_size} does not divide over {self.workers} workers; "
                f"use a multiple of {self.workers}"
            )

    @property
    def per_rank_batch_size(self) -> int:
        return self.batch_size // self.workers

    def describe(self) -> dict[str, Any]:
        """A JSON-ready view; callables are named, not serialised."""
        def name(obj: Any) -> Any:
            if obj is None or isinstance(obj, (str, int, float)):
                return obj
            return getattr(obj, "__name__", type(obj).__name__)

        return {
            "model": name(self.model),
            "model_options": dict(self.model_options),
            "data": name(self.data),
            "loss": name(self.loss),
            "strategy": self.strategy.value,
            "workers": self.workers,
            "precision": self.precision.value,
            "steps": self.steps,
            "warmup_steps": self.warmup_steps,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "seed": self.seed,
        }
