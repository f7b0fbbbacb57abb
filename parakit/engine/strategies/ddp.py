"""DistributedDataParallel: a full replica on every rank, gradients all-reduced in buckets
during backward, so communication overlaps with the rest of backward. Every bucket goes
through a communication hook that compresses it (or not) and counts the bytes it sends. The
other sync modes replace that hook: local SGD and diloco skip the all-reduce and sync the
parameters every H steps; delayed averaging launches it and applies its result D steps later.

``apply_ddp`` is the last of compose's steps (engine/compose.py): it wraps the model after
conversion, checkpointing and compile, so its gradient hooks stay outside the compiled blocks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from parakit.config.levers import Compression, Sync, SyncKind
from parakit.config.sync import OUTER_LR, OUTER_MOMENTUM
from parakit.engine import compression as compressing
from parakit.engine.compression.casts import WIRE_DTYPE
from parakit.engine.delayed import DelayedAveraging
from parakit.engine.diloco import STREAMING_OVERLAP_STEPS, DiLoCo
from parakit.engine.local_sgd import LocalSGD
from parakit.engine.strategies.base import LossFn, Parallel, plain_forward_backward, unscaled


@dataclass(frozen=True, kw_only=True)
class GradientSync:
    """How the replicas synchronise: the run's settings for it, and no others."""

    sync: Sync = field(default_factory=Sync)
    """When: every step, accumulate, local-sgd, delayed, diloco or streaming-diloco."""
    compression: Compression = field(default_factory=Compression)
    """What each bucket is sent as (every-step and accumulate), and the dtype the others send."""
    error_feedback: bool = True
    """topk and randomk carry the entries they did not send into the next step."""
    seed: int = 0
    """The same on every rank: seeds randomk's indices and PowerSGD's first Q."""
    steps: int = 1
    """The run's steps: local SGD and diloco end replicated only where a sync falls on the last."""
    outer_lr: float = OUTER_LR
    """diloco's outer optimizer's learning rate..."""
    outer_momentum: float = OUTER_MOMENTUM
    """...and its Nesterov momentum."""


def apply_ddp(model: nn.Module, mesh, *, device: torch.device, loss_fn: LossFn,
              scale_loss: Callable[[torch.Tensor], torch.Tensor] = unscaled, bucket_mb: float | None = None,
              sync: GradientSync | None = None) -> Parallel:
    """Wrap ``model`` in DDP over ``mesh`` and set up how its replicas synchronise.

    Args:
        model: the model, converted, checkpointed and compiled as the run asks.
        mesh: a 1-D device mesh over every rank: the sync modes and compression hooks average
            over torch's default group, as DDP's own all-reduce does.
        device: this rank's device.
        loss_fn: (outputs, targets) -> the loss.
        scale_loss: fp16's GradScaler.scale; the loss itself otherwise.
        bucket_mb: DDP's gradient bucket size in MB; None for DDP's default (25).
        sync: when and how gradients or parameters are synchronised; None for every step.

    Returns:
        The replica, ready for the loop.
    """
    import torch.distributed as dist

    if mesh.ndim != 1 or mesh.size() != dist.get_world_size():
        raise ValueError(f"ddp runs over every rank ({dist.get_world_size()}), not a mesh of {tuple(mesh.shape)}")
    sync = sync or GradientSync()
    # DDP broadcasts rank 0's weights at construction; the seeded build already made them
    # equal, and the broadcast keeps it true for a user's model that is not seeded.
    device_ids = [device.index] if device.type == "cuda" else None
    buckets = {} if bucket_mb is None else {"bucket_cap_mb": bucket_mb}
    ddp = DistributedDataParallel(model, device_ids=device_ids, process_group=mesh.get_group(), **buckets)
    parallel = Parallel([ddp], plain_forward_backward(ddp, loss_fn, scale_loss), replicated=True, no_sync=ddp.no_sync)
    SYNC[sync.sync.kind](ddp, sync, parallel)
    return parallel


def every_step(ddp: DistributedDataParallel, sync: GradientSync, parallel: Parallel) -> None:
    """Gradients averaged in every synchronising backward, through the compression's hook."""
    parallel.wire = compressing.register(ddp, sync.compression, error_feedback=sync.error_feedback, seed=sync.seed)


def local_sgd(ddp: DistributedDataParallel, sync: GradientSync, parallel: Parallel) -> None:
    local = LocalSGD(ddp, sync.sync.every)
    parallel.wire = local.counter
    parallel.after_step = lambda: local.after_step(ddp.parameters())
    # Between averages the replicas differ by design; they are equal right after one.
    parallel.replicated = sync.steps % sync.sync.every == 0


def delayed(ddp: DistributedDataParallel, sync: GradientSync, parallel: Parallel) -> None:
    averaging = DelayedAveraging(ddp, sync.sync.every, steps=sync.steps,
                                 wire_dtype=WIRE_DTYPE[sync.compression.kind])
    parallel.wire = averaging.counter
    parallel.before_step, parallel.after_step = averaging.before_step, averaging.after_step
    # AdamW's moments are each rank's own, so replicas stay close, not equal (delayed.py).
    parallel.replicated = False


def diloco(ddp: DistributedDataParallel, sync: GradientSync, parallel: Parallel) -> None:
    fragments = sync.sync.fragments or 1
    outer = DiLoCo(ddp, sync.sync.every, steps=sync.steps, fragments=fragments,
                   overlap=STREAMING_OVERLAP_STEPS if sync.sync.fragments else 0, outer_lr=sync.outer_lr,
                   outer_momentum=sync.outer_momentum, wire_dtype=WIRE_DTYPE[sync.compression.kind])
    parallel.wire = outer.counter
    parallel.after_step = outer.after_step
    # Between syncs the replicas differ by design; they are equal right after every fragment's.
    parallel.replicated = outer.ends_replicated()


# How each sync mode sets up the replica's communication (accumulate's micro-steps before the
# last run inside DDP's no_sync).
SYNC: dict[SyncKind, Callable[[DistributedDataParallel, GradientSync, Parallel], None]] = {
    SyncKind.EVERY_STEP: every_step,
    SyncKind.ACCUMULATE: every_step,
    SyncKind.LOCAL_SGD: local_sgd,
    SyncKind.DELAYED: delayed,
    SyncKind.DILOCO: diloco,
    SyncKind.STREAMING_DILOCO: diloco,
}
