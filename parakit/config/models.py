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

# Options a built-in model takes only when given, with no default: absent, the model is the one
# above, bit for bit. gpt's ``experts`` makes each block's MLP a mixture of that many experts
# (engine/workloads/moe.py), each token sent to ``top_k`` of them (default 1, Switch's routing).
EXTRA_OPTIONS: dict[Workload, tuple[str, ...]] = {Workload.GPT: ("experts", "top_k")}
DEFAULT_TOP_K = 1


def check_model_options(model: Workload, options: Mapping[str, Any]) -> None:
    """Raise ValueError for an option the built-in model does not have or a bad value."""
    allowed = [*MODEL_OPTIONS[model], *EXTRA_OPTIONS.get(model, ())]
    for key, value in options.items():
        if key not in allowed:
            raise ValueError(
                f"model {model.value} has no option {key!r}; options: {', '.join(allowed)}"
            )
        check_int(f"model option {key}", value, 1)
    if model is Workload.GPT:
        merged = {**MODEL_OPTIONS[model], **options}
        if merged["width"] % merged["heads"]:
            raise ValueError(
                f"gpt width ({merged['width']}) must be divisible by heads ({merged['heads']})"
            )
        check_experts(options)


def experts_of(options: Mapping[str, Any]) -> tuple[int, int] | None:
    """(experts, top_k) of a mixture-of-experts gpt, or None for a dense model."""
    if "experts" not in options:
        return None
    return options["experts"], options.get("top_k", DEFAULT_TOP_K)


def check_experts(options: Mapping[str, Any]) -> None:
    if "top_k" in options and "experts" not in options:
        raise ValueError("model option top_k needs experts, e.g. model_options={'experts': 4, 'top_k': 2}")
    moe = experts_of(options)
    if moe is not None and not 1 <= moe[1] <= moe[0]:
        raise ValueError(f"model option top_k ({moe[1]}) must be at most experts ({moe[0]})")
