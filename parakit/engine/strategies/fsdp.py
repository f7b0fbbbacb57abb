"""FSDP2 (``fully_shard``): every parameter split in dim 0 over the ranks. Each block gathers
its full weights just before it runs and frees them after; gradients are reduce-scattered, so
a rank keeps (and steps the optimizer on) only its shard."""

from __future__ import annotations

from torch import nn
from torch.distributed.fsdp import fully_shard

from parakit.engine.strategies.base import Context, Parallel, plain_forward_backward, repeated_blocks


def shard(model: nn.Module, mesh=None) -> nn.Module:
    """Shard each repeated block on its own (so only one block is gathered at a time), then the
    rest of the model (embeddings, head) as the root unit. A model without a block list is one
    unit: correct, just with no overlap between gathering and compute."""
    for block in repeated_blocks(model):
        fully_shard(block, mesh=mesh)
    return fully_shard(model, mesh=mesh)


def apply_fsdp(model: nn.Module, ctx: Context) -> Parallel:
    sharded = shard(model)
    return Parallel(
        [sharded], plain_forward_backward(sharded, ctx.loss_fn),
        data_rank=ctx.rank, data_size=ctx.world_size,
    )
