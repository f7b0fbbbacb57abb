"""DistributedDataParallel: a full replica on every rank, gradients all-reduced in buckets
during backward, so communication overlaps with the rest of backward. Every bucket goes
through a communication hook that compresses it (or not) and counts the bytes it sends. The
other sync modes replace that hook: local SGD and diloco skip the all-reduce and sync the
parameters every H steps; delayed averaging launches it and applies its result D steps later."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn
from torch.nn.parallel import DistributedDataParallel

from parakit.config.levers import SyncKind
from parakit.config.run import RunConfig
from parakit.config.sync import outer_settings
from parakit.engine import compression
from parakit.engine.checkpointing import apply_checkpointing
from parakit.engine.compression.casts import WIRE_DTYPE
from parakit.engine.delayed import DelayedAveraging
from parakit.engine.diloco import STREAMING_OVERLAP_STEPS, DiLoCo
from parakit.engine.local_sgd import LocalSGD
from parakit.engine.strategies.base import Context, Parallel, convert_fp8, plain_forward_backward

def wrap_ddp(model: nn.Module, ctx: Context) -> DistributedDataParallel:
    """The model as DDP over the whole group (hybrids average over sub-groups their own way)."""
    # DDP broadcasts rank 0's weights at construction; the seeded build already made them
    # equal, and the broadcast keeps it true for a user's model that is not seeded.
    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    buckets = {} if ctx.config.bucket_mb is None else {"bucket_cap_mb": ctx.config.bucket_mb}
    return DistributedDataParallel(model, device_ids=device_ids, **buckets)


def apply_ddp(model: nn.Module, ctx: Context) -> Parallel:
    config = ctx.config
    fp8_layers = convert_fp8(model, ctx)
    apply_checkpointing(model, config.activation_checkpointing)  # inside the replica DDP wraps
    ddp = wrap_ddp(model, ctx)
    parallel = Parallel(
        [ddp], plain_forward_backward(ddp, ctx),
        data_rank=ctx.rank, data_size=ctx.world_size, replicated=True, no_sync=ddp.no_sync,
        fp8_layers=fp8_layers,
    )
    SYNC[config.sync.kind](ddp, config, parallel)
    return parallel


def every_step(ddp: DistributedDataParallel, config: RunConfig, parallel: Parallel) -> None:
    """Gradients averaged in every synchronising backward, through the compression's hook."""
    parallel.wire = compression.register(
        ddp, config.compression, error_feedback=config.error_feedback, seed=config.seed
    )


def local_sgd(ddp: DistributedDataParallel, config: RunConfig, parallel: Parallel) -> None:
    local = LocalSGD(ddp, config.sync.every)
    parallel.wire = local.counter
    parallel.after_step = lambda: local.after_step(ddp.parameters())
    # Between averages the replicas differ by design; they are equal right after one.
    parallel.replicated = config.steps % config.sync.every == 0


def delayed(ddp: DistributedDataParallel, config: RunConfig, parallel: Parallel) -> None:
    averaging = DelayedAveraging(ddp, config.sync.every, steps=config.steps,
                                 wire_dtype=WIRE_DTYPE[config.compression.kind])
    parallel.wire = averaging.counter
    parallel.before_step, parallel.after_step = averaging.before_step, averaging.after_step
    # AdamW's moments are each rank's own, so replicas stay close, not equal (delayed.py).
    parallel.replicated = False


def diloco(ddp: DistributedDataParallel, config: RunConfig, parallel: Parallel) -> None:
    fragments = config.sync.fragments or 1
    lr, momentum = outer_settings(config)
    outer = DiLoCo(ddp, config.sync.every, steps=config.steps, fragments=fragments,
                   overlap=STREAMING_OVERLAP_STEPS if config.sync.fragments else 0, outer_lr=lr,
                   outer_momentum=momentum, wire_dtype=WIRE_DTYPE[config.compression.kind])
    parallel.wire = outer.counter
    parallel.after_step = outer.after_step
    # Between syncs the replicas differ by design; they are equal right after every fragment's.
    parallel.replicated = outer.ends_replicated()


# How each sync mode sets up the replica's communication (accumulate's micro-steps before the
# last run inside DDP's no_sync).
SYNC: dict[SyncKind, Callable[[DistributedDataParallel, RunConfig, Parallel], None]] = {
    SyncKind.EVERY_STEP: every_step,
    SyncKind.ACCUMULATE: every_step,
    SyncKind.LOCAL_SGD: local_sgd,
    SyncKind.DELAYED: delayed,
    SyncKind.DILOCO: diloco,
    SyncKind.STREAMING_DILOCO: diloco,
}
