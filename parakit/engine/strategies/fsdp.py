"""FSDP2 (``fully_shard``): every parameter split in dim 0 over the ranks. Each block gathers
its full weights just before it runs and frees them after; gradients are reduce-scattered, so
a rank keeps (and steps the optimizer on) only its shard.

ZeRO's names for it: stage 3 is FSDP's default (a block's gathered weights are freed after its
forward and gathered again in backward); stage 2 keeps them from forward to backward, one
all-gather per block and step instead of two, for a full replica's weights held at the peak."""

from __future__ import annotations

import contextlib

from torch import nn
from torch.distributed.fsdp import fully_shard

from parakit.engine.checkpointing import apply_checkpointing
from parakit.engine.precision import fsdp_mixed_precision
from parakit.engine.strategies.base import (
    Context, Parallel, convert_fp8, plain_forward_backward, repeated_blocks,
)

# ZeRO stage -> fully_shard's reshard_after_forward. Stage 3 and no stage leave it to FSDP:
# True for the blocks, False for the root, whose weights backward needs first anyway.
RESHARD_AFTER_FORWARD: dict[int | None, bool | None] = {None: None, 2: False, 3: None}


def shard(model: nn.Module, ctx: Context, mesh=None) -> nn.Module:
    """Shard each repeated block on its own (so only one block is gathered at a time), then the
    rest of the model (embeddings, head) as the root unit. A model without a block list is one
    unit: correct, just with no overlap between gathering and compute. The run's ZeRO stage
    says whether gathered weights are kept from forward to backward (RESHARD_AFTER_FORWARD)."""
    # Precision as FSDP does it: parameters gathered in the compute dtype, gradients reduced in
    # fp32 or in the dtype compression asks for.
    policy = fsdp_mixed_precision(ctx.config.precision, ctx.config.compression)
    options = {"mesh": mesh} if policy is None else {"mesh": mesh, "mp_policy": policy}
    reshard = RESHARD_AFTER_FORWARD[ctx.config.zero]
    if reshard is not None:
        options["reshard_after_forward"] = reshard
    for block in repeated_blocks(model):
        fully_shard(block, **options)
    return fully_shard(model, **options)


def apply_fsdp(model: nn.Module, ctx: Context) -> Parallel:
    fp8_layers = convert_fp8(model, ctx, fsdp=True)  # float8 weights, all-gathered in float8
    apply_checkpointing(model, ctx.config.activation_checkpointing)  # before sharding, as torchtitan
    sharded = shard(model, ctx)
    parallel = Parallel(
        [sharded], plain_forward_backward(sharded, ctx),
        data_rank=ctx.rank, data_size=ctx.world_size, no_sync=lambda: skip_gradient_sync(sharded),
        fp8_layers=fp8_layers,
    )
    if fp8_layers:
        from parakit.engine.fp8 import scale_precompute

        # every float8 weight's scale in one all-reduce after the step, not one per weight in forward
        parallel.after_step = scale_precompute(sharded)
    return parallel


@contextlib.contextmanager
def skip_gradient_sync(model):
    """FSDP2's no_sync: keep unsharded gradients and reduce-scatter only on the last micro-step."""
    model.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        model.set_requires_gradient_sync(True)
