"""DistributedDataParallel: a full replica on every rank, gradients all-reduced in buckets
during backward, so communication overlaps with the rest of backward. Every bucket goes
through a communication hook that compresses it (or not) and counts the bytes it sends;
under local SGD the hook skips the all-reduce and parameters are averaged every H steps."""

from __future__ import annotations

from torch import nn
from torch.nn.parallel import DistributedDataParallel

from parakit.engine import compression
from parakit.engine.checkpointing import apply_checkpointing
from parakit.engine.local_sgd import LocalSGD
from parakit.engine.strategies.base import Context, Parallel, plain_forward_backward
from parakit.config.levers import SyncKind


def wrap_ddp(model: nn.Module, ctx: Context) -> DistributedDataParallel:
    """The model as DDP over the whole group (hybrids average over sub-groups their own way)."""
    # DDP broadcasts rank 0's weights at construction; the seeded build already made them
    # equal, and the broadcast keeps it true for a user's model that is not seeded.
    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    buckets = {} if ctx.config.bucket_mb is None else {"bucket_cap_mb": ctx.config.bucket_mb}
    return DistributedDataParallel(model, device_ids=device_ids, **buckets)


def apply_ddp(model: nn.Module, ctx: Context) -> Parallel:
    config = ctx.config
    apply_checkpointing(model, config.activation_checkpointing)  # inside the replica DDP wraps
    ddp = wrap_ddp(model, ctx)
    parallel = Parallel(
        [ddp], plain_forward_backward(ddp, ctx),
        data_rank=ctx.rank, data_size=ctx.world_size, replicated=True, no_sync=ddp.no_sync,
    )
    if config.sync.kind is SyncKind.LOCAL_SGD:
        local = LocalSGD(ddp, config.sync.every)
        parallel.wire = local.counter
        parallel.after_step = lambda: local.after_step(ddp.parameters())
        # Between averages the replicas differ by design; they are equal right after one.
        parallel.replicated = config.steps % config.sync.every == 0
    else:
        parallel.wire = compression.register(
            ddp, config.compression, error_feedback=config.error_feedback, seed=config.seed
        )
    return parallel
