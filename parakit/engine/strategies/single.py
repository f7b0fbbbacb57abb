"""One engine, no process group: the baseline every speed-up is measured against."""

from __future__ import annotations

from torch import nn

from parakit.engine.checkpointing import apply_checkpointing
from parakit.engine.strategies.base import Context, Parallel, plain_forward_backward


def apply_single(model: nn.Module, ctx: Context) -> Parallel:
    apply_checkpointing(model, ctx.config.activation_checkpointing)
    return Parallel([model], plain_forward_backward(model, ctx), replicated=True)
