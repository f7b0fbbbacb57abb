"""What every strategy hands back to the training loop (Parallel), and the pieces they share."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from parakit.engine.losses import LossFn, forward_loss


def unscaled(loss: torch.Tensor) -> torch.Tensor:
    """What backward starts from without fp16's GradScaler: the loss itself."""
    return loss


@dataclass
class Parallel:
    """A model laid out over the ranks, ready for the loop: ``zero_grad``, ``forward_backward``,
    ``optimizer.step()``."""

    modules: list[nn.Module]
    """What this rank holds and its optimizer updates (a pipeline rank: its stages only)."""
    forward_backward: Callable[[Any, Any], torch.Tensor | None]
    """(inputs, targets) -> this rank's loss, gradients ready; None where no loss is computed
    here (pipeline stages before the last)."""
    data_rank: int = 0
    """Which slice of the global batch this rank reads..."""
    data_size: int = 1
    """...out of this many (the data-parallel degree)."""
    replicated: bool = False
    """Every rank holds the full model, so ranks must end bit-identical."""
    stats: Callable[[], dict[str, Any]] = field(default=lambda: {})
    """Strategy-specific figures for the run record (e.g. a pipeline's bubble)."""
    wire: Any = None
    """A WireCounter of the bytes gradient synchronisation sends, where it is counted (ddp)."""
    before_step: Callable[[], None] = lambda: None
    """Run before each optimizer step, gradients ready (delayed averaging's late corrections)."""
    after_step: Callable[[], None] = lambda: None
    """Run after each optimizer step (local SGD's and diloco's periodic syncs)."""
    no_sync: Callable[[], Any] = contextlib.nullcontext
    """A context in which backward accumulates gradients without synchronising them."""
    fp8_layers: list[str] | None = None
    """Under precision fp8, the linear layers converted to float8 (engine/fp8.py); else None."""
    composed: tuple[str, ...] = ()
    """The steps that laid the model out, in the order they were applied (engine/compose.py)."""
    sharded_units: list[str] | None = None
    """Under fsdp, the modules sharded as units of their own, each gathered alone (the rest of
    the model is one more unit, the root); [WHOLE_MODEL] where no blocks were found; else None."""
    checkpointed_units: list[str] | None = None
    """With activation checkpointing, the modules whose forward is recomputed in backward;
    [WHOLE_MODEL] where no blocks were found; else None."""

    def parameters(self):
        for module in self.modules:
            yield from module.parameters()


def plain_forward_backward(model: nn.Module, loss_fn: LossFn,
                           scale_loss: Callable[[torch.Tensor], torch.Tensor] = unscaled) -> Callable[..., torch.Tensor]:
    """One forward and backward through ``model``; ``scale_loss`` is fp16's GradScaler.scale."""

    def forward_backward(inputs, targets, weight: float = 1.0):
        loss = forward_loss(model, loss_fn, inputs, targets)
        # weight < 1 when a step accumulates over micro-steps: their mean is the batch's loss.
        # ddp/fsdp: gradient communication runs inside backward, bucket by bucket.
        scale_loss(loss * weight if weight != 1.0 else loss).backward()
        return loss

    return forward_backward

