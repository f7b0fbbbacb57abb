"""DistributedDataParallel: a full replica on every rank, gradients all-reduced in buckets
during backward, so communication overlaps with the rest of backward."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel


def apply_ddp(model: nn.Module, device: torch.device) -> nn.Module:
    # DDP broadcasts rank 0's weights at construction; the seeded build already made them
    # equal, and the broadcast keeps it true for a user's model that is not seeded.
    device_ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)
