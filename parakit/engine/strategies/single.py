"""One engine, no process group: the baseline every speed-up is measured against."""

from __future__ import annotations

from torch import nn

from parakit.engine.checkpointing import apply_checkpointing
from parakit.engine.strategies.base import Context, Parallel, convert_fp8, plain_forward_backward


def apply_single(model: nn.Module, ctx: Context) -> Parallel:
    fp8_layers = convert_fp8(model, ctx)
    apply_checkpointing(model, ctx.config.activation_checkpointing)
    return Parallel([model], plain_forward_backward(model, ctx), replicated=True, fp8_layers=fp8_layers)
