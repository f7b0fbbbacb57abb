"""How the sync modes combine with layouts, compression, precision and their own settings.
Standard library only: a combination that cannot work is refused in the notebook's process,
before any engine is touched, in one line that says why.

- every-step: DDP's (or FSDP's) gradient all-reduce in every backward;
- accumulate:K: the same, once per K micro-steps;
- local-sgd:H: ranks step alone, parameters averaged every H steps;
- delayed:D: each rank steps on its own gradient at once; its average arrives D steps later
  and corrects it (engine/delayed.py);
- diloco:H: H inner AdamW steps alone, then the averaged change of the parameters is an
  outer gradient for SGD with Nesterov momentum (engine/diloco.py);
- streaming-diloco:H,F: diloco over F fragments of the parameters, each synced every H steps,
  H/F steps apart, its all-reduce overlapped with the next inner step.
"""

from __future__ import annotations

from typing import Any

from parakit.config.choices import is_number
from parakit.config.layouts import Strategy
from parakit.config.levers import CompressionKind, Precision, SyncKind

SYNC_FOR: dict[SyncKind, set[Strategy]] = {
    SyncKind.EVERY_STEP: set(Strategy),
    SyncKind.LOCAL_SGD: {Strategy.DDP},
    SyncKind.ACCUMULATE: {Strategy.SINGLE, Strategy.DDP, Strategy.FSDP},
    SyncKind.DELAYED: {Strategy.DDP},
    SyncKind.DILOCO: {Strategy.DDP},
    SyncKind.STREAMING_DILOCO: {Strategy.DDP},
}
_ALONE = "each rank trains a full replica alone between syncs, and the other layouts split the model over the ranks"
# Why a mode is refused elsewhere, where the reason is not plain from the mode's name.
_WHY_DDP_ONLY = {
    SyncKind.DELAYED: "it needs DDP's per-bucket communication hook to hand each rank its own gradient "
                      "at once, and fsdp reduce-scatters inside its own backward",
    SyncKind.DILOCO: _ALONE,
    SyncKind.STREAMING_DILOCO: _ALONE,
}
# Modes in which a rank steps on gradients the others do not have.
OWN_GRADIENTS = {SyncKind.LOCAL_SGD, SyncKind.DELAYED, SyncKind.DILOCO, SyncKind.STREAMING_DILOCO}
_CASTS = {CompressionKind.NONE, CompressionKind.FP16, CompressionKind.BF16}
_PSEUDO = ("{sync} all-reduces pseudo-gradients (the parameters' change) every H steps, which fp16 or bf16 "
           "can carry; {kind} compresses per-step gradients: use compression none, fp16 or bf16")
# The compressions each mode takes where it sends something other than every step's gradients,
# and why it refuses the others.
_COMPRESSION_FOR = {
    SyncKind.LOCAL_SGD: ({CompressionKind.NONE},
                         "local-sgd averages parameters, not gradients; use compression='none' with it"),
    SyncKind.DELAYED: (_CASTS, "delayed swaps each rank's own gradient for the ranks' average D steps later, "
                               "and {kind} averages only a part of it, carrying the rest itself; use "
                               "compression none, fp16 or bf16 with it"),
    SyncKind.DILOCO: (_CASTS, _PSEUDO),
    SyncKind.STREAMING_DILOCO: (_CASTS, _PSEUDO),
}
DILOCO_KINDS = {SyncKind.DILOCO, SyncKind.STREAMING_DILOCO}
OUTER_LR = 0.7
"""DiLoCo's outer learning rate (Douillard et al. 2023)."""
OUTER_MOMENTUM = 0.9
"""DiLoCo's outer Nesterov momentum (Douillard et al. 2023)."""


def check_sync(config: Any) -> None:
    """Raise ValueError, in one line that says why, where ``config``'s sync mode does not fit
    its layout, compression, precision or batch, or where its outer settings are wrong."""
    sync, kind = config.sync, config.sync.kind
    if kind is not SyncKind.EVERY_STEP and config.strategy not in SYNC_FOR[kind]:
        takes = ", ".join(sorted(str(s) for s in SYNC_FOR[kind]))
        why = f": {_WHY_DDP_ONLY[kind]}" if kind in _WHY_DDP_ONLY else ""
        raise ValueError(f"sync {sync} applies to {takes}, not {config.strategy}{why}")
    if kind is SyncKind.ACCUMULATE and config.per_rank_batch_size % sync.every:
        raise ValueError(
            f"accumulate:{sync.every} does not divide each rank's batch of {config.per_rank_batch_size}; "
            f"use a batch_size that is a multiple of {sync.every * config.data_parallel_size}"
        )
    takes, why = _COMPRESSION_FOR.get(kind, (set(CompressionKind), ""))
    if config.compression.kind not in takes:
        raise ValueError(why.format(sync=kind, kind=config.compression.kind))
    if kind is SyncKind.DELAYED and config.precision is Precision.FP16:
        raise ValueError("delayed does not combine with fp16: a correction applied D steps late would carry "
                         "that step's loss scale into another's; use bf16 (no scaling needed)")
    _check_outer(config)


def _check_outer(config: Any) -> None:
    for name in ("outer_lr", "outer_momentum"):
        value = getattr(config, name)
        if value is None:
            continue
        if config.sync.kind not in DILOCO_KINDS:
            raise ValueError(f"{name} applies to sync diloco and streaming-diloco (sync is {config.sync})")
        if not is_number(value):
            raise ValueError(f"{name} must be a number (got {value!r})")
    if config.outer_lr is not None and config.outer_lr <= 0:
        raise ValueError(f"outer_lr must be a positive number, e.g. {OUTER_LR} (got {config.outer_lr!r})")
    if config.outer_momentum is not None and not 0 <= config.outer_momentum < 1:
        raise ValueError(f"outer_momentum must be in [0, 1), e.g. {OUTER_MOMENTUM} (got {config.outer_momentum!r})")


def outer_settings(config: Any) -> tuple[float, float]:
    """The outer optimizer's (lr, momentum): the run's, or DiLoCo's defaults."""
    lr = OUTER_LR if config.outer_lr is None else float(config.outer_lr)
    momentum = OUTER_MOMENTUM if config.outer_momentum is None else float(config.outer_momentum)
    return lr, momentum


def describe_sync(config: Any) -> dict[str, Any]:
    """The outer settings a diloco run used, for its record; nothing for other modes, so earlier
    runs' records compare equal."""
    if config.sync.kind not in DILOCO_KINDS:
        return {}
    lr, momentum = outer_settings(config)
    return {"outer_lr": lr, "outer_momentum": momentum}
