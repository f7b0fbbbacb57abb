"""The built-in models by name, the sizes each takes, and the check of those sizes. Standard
library only: a wrong size is found in the notebook's process."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from parakit.config.choices import Choice, check_int


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


def check_model_options(model: Workload, options: Mapping[str, Any]) -> None:
    """Raise ValueError for an option the built-in model does not have or a bad value."""
    allowed = MODEL_OPTIONS[model]
    for key, value in options.items():
        if key not in allowed:
            raise ValueError(
                f"model {model.value} has no option {key!r}; options: {', '.join(allowed)}"
            )
        check_int(f"model option {key}", value, 1)
    if model is Workload.GPT:
        merged = {**allowed, **options}
        if merged["width"] % merged["heads"]:
            raise ValueError(
                f"gpt width ({merged['width']}) must be divisible by heads ({merged['heads']})"
            )
