"""A small convolutional net on synthetic 32x32 RGB images."""

from __future__ import annotations

import torch
from torch import nn


def _conv_block(cin: int, cout: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))


class CNN(nn.Module):
    def __init__(self, *, channels: int, classes: int):
        super().__init__()
        c = channels
        self.blocks = nn.ModuleList([_conv_block(3, c), _conv_block(c, 2 * c), _conv_block(2 * c, 4 * c)])
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * c, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.head(x)
