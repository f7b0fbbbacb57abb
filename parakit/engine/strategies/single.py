"""One engine, no process group: the baseline every speed-up is measured against."""

from __future__ import annotations

import torch
from torch import nn


def apply_single(model: nn.Module, device: torch.device) -> nn.Module:
    return model
