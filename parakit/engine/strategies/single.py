"""One engine, no process group: the baseline every speed-up is measured against."""

from __future__ import annotations

from torch import nn

from parakit.engine.strategies.base import Context, Parallel, plain_forward_backward


def apply_single(model: nn.Module, ctx: Context) -> Parallel:
    return Parallel([model], plain_forward_backward(model, ctx), replicated=True)
