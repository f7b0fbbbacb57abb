"""Strategies: one module each, chosen through a dict from the Strategy enum."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from parakit.config import Strategy
from parakit.engine.strategies.ddp import apply_ddp
from parakit.engine.strategies.single import apply_single

APPLY: dict[Strategy, Callable[..., nn.Module]] = {
    Strategy.SINGLE: apply_single,
    Strategy.DDP: apply_ddp,
}

# Strategies whose ranks each hold a full replica and should end with identical weights.
REPLICATED = {Strategy.SINGLE, Strategy.DDP}
