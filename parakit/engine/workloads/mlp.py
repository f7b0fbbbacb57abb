"""A multilayer perceptron on synthetic classification data."""

from __future__ import annotations

import torch
from torch import nn


class MLP(nn.Module):
    def __init__(self, *, in_features: int, width: int, depth: int, classes: int):
        super().__init__()
        sizes = [in_features] + [width] * max(depth - 1, 1)
        # Blocks in a list, so strategies that split a model can count and place them.
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Linear(a, b), nn.GELU()) for a, b in zip(sizes[:-1], sizes[1:])
        )
        self.head = nn.Linear(sizes[-1], classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.head(x)
