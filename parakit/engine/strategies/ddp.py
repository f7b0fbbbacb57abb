"""DistributedDataParallel: a full replica on every rank, gradients all-reduced in buckets
during backward, so communication overlaps with the rest of backward."""

from __future__ import annotations

from torch import nn
from torch.nn.parallel import DistributedDataParallel

from parakit.engine.strategies.base import Context, Parallel, plain_forward_backward


def wrap_ddp(model: nn.Module, ctx: Context, process_group=None) -> DistributedDataParallel:
    # DDP broadcasts rank 0's weights at construction; the seeded build already made them
    # equal, and the broadcast keeps it true for a user's model that is not seeded.
    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids, process_group=process_group)


def apply_ddp(model: nn.Module, ctx: Context) -> Parallel:
    ddp = wrap_ddp(model, ctx)
    return Parallel(
        [ddp], plain_forward_backward(ddp, ctx.loss_fn),
        data_rank=ctx.rank, data_size=ctx.world_size, replicated=True,
    )
