"""Strategies: one module each, chosen through a dict from the Strategy enum. Each takes the
built model and a Context and returns a Parallel: what this rank holds and how it steps."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from parakit.config import Strategy
from parakit.engine.strategies.base import Context, Parallel
from parakit.engine.strategies.ddp import apply_ddp
from parakit.engine.strategies.fsdp import apply_fsdp
from parakit.engine.strategies.hybrid import apply_hybrid
from parakit.engine.strategies.pipeline import apply_pipeline
from parakit.engine.strategies.single import apply_single
from parakit.engine.strategies.tensor import apply_tensor

APPLY: dict[Strategy, Callable[[nn.Module, Context], Parallel]] = {
    Strategy.SINGLE: apply_single,
    Strategy.DDP: apply_ddp,
    Strategy.FSDP: apply_fsdp,
    Strategy.PIPELINE: apply_pipeline,
    Strategy.TENSOR: apply_tensor,
    Strategy.HYBRID: apply_hybrid,
}

__all__ = ["APPLY", "Context", "Parallel"]
