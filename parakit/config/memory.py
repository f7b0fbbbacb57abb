"""The levers that trade memory for compute or communication, by their common names, and how
they combine with the layouts. Standard library only: a setting that cannot work is refused in
the notebook's process, before any engine is touched.

- activation checkpointing: ``full`` recomputes each repeated block's forward in backward
  instead of keeping its activations; ``selective`` keeps the matmuls' outputs and recomputes
  the cheap operations around them;
- ZeRO stages (DeepSpeed's names): 1 shards the optimizer state over the data-parallel ranks
  (ddp); 2 adds the gradients and 3 the parameters, which is FSDP keeping its gathered
  parameters between forward and backward (2) or freeing them after forward (3).
"""

from __future__ import annotations

from typing import Any

from parakit.config.choices import Choice, check_int
from parakit.config.layouts import Hybrid, Strategy
from parakit.config.sync import OWN_GRADIENTS


class Checkpointing(Choice):
    NONE = "none"
    FULL = "full"
    SELECTIVE = "selective"


# Which ZeRO stage each layout gives: ddp with a sharded optimizer is stage 1; FSDP is stage
# 3 by default and stage 2 when it keeps the gathered parameters for backward.
ZERO_FOR: dict[int, set[Any]] = {
    1: {Strategy.DDP},
    2: {Strategy.FSDP, Hybrid.FSDP_TENSOR},
    3: {Strategy.FSDP, Hybrid.FSDP_TENSOR},
}


def check_memory_levers(config: Any) -> None:
    """Raise ValueError, in one line that names the fix, where ``config``'s activation
    checkpointing, ZeRO stage or memory snapshot do not fit its layout."""
    layout = config.hybrid if config.strategy is Strategy.HYBRID else config.strategy
    if config.zero is not None:
        if isinstance(config.zero, bool) or config.zero not in ZERO_FOR:
            raise ValueError(f"zero must be 1, 2 or 3 (got {config.zero!r})")
        if layout not in ZERO_FOR[config.zero]:
            fits = " or ".join(sorted(str(s) for s in ZERO_FOR[config.zero]))
            raise ValueError(f"zero={config.zero} applies to {fits}, not {layout} "
                             f"(zero=1 shards ddp's optimizer state; zero=2 and 3 are fsdp's)")
        if config.zero == 1 and config.sync.kind in OWN_GRADIENTS:
            raise ValueError("zero=1 steps each parameter on one rank with gradients every rank shares; "
                             f"{config.sync.kind}'s ranks keep their own gradients, so use one or the other")
    if config.activation_checkpointing is not Checkpointing.NONE and config.uses_pipeline:
        raise ValueError("activation checkpointing does not combine with pipelines yet (their stages run "
                         "what torch.export traced, where the blocks are no longer modules to wrap); "
                         "use activation_checkpointing='none'")
    if config.memory_limit is not None:
        check_int("memory_limit (bytes)", config.memory_limit, 1)
    if not isinstance(config.memory_snapshot, bool):
        raise ValueError(f"memory_snapshot must be True or False (got {config.memory_snapshot!r})")


def describe_memory_levers(config: Any) -> dict[str, Any]:
    """The levers that are set, for the run record (left out when off, so earlier runs'
    records compare equal)."""
    out: dict[str, Any] = {}
    if config.activation_checkpointing is not Checkpointing.NONE:
        out["activation_checkpointing"] = config.activation_checkpointing.value
    if config.zero is not None:
        out["zero"] = config.zero
    if config.memory_limit is not None:
        out["memory_limit"] = config.memory_limit
    if config.memory_snapshot:
        out["memory_snapshot"] = True
    return out
