"""Gradient compression for DDP: one communication hook per kind, chosen through a dict
(accelerate's DDPCommunicationHookType pattern), each counting the bytes it sends.

Use from the training loop::

    model = DistributedDataParallel(model)
    counter = compression.register(model, config.compression,
                                   error_feedback=config.error_feedback)
    for step in range(config.steps):
        ...
        loss.backward()          # the hooks run here, bucket by bucket, and count
        optimizer.step()
        step_bytes = counter.take_step()   # StepBytes(comm_bytes, uncompressed_bytes)

See ``counting`` for what "bytes sent" means.
"""

from __future__ import annotations

from collections.abc import Callable

import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from parakit.engine.compression.casts import make_cast
from parakit.engine.compression.counting import GradientBytes, Hook, HookSetup, StepBytes, WireCounter
from parakit.engine.compression.powersgd import POWERSGD_START_ITER, make_powersgd
from parakit.engine.compression.sparse import make_randomk, make_topk
from parakit.config.levers import Compression, CompressionKind

__all__ = ["HOOKS", "POWERSGD_START_ITER", "StepBytes", "WireCounter", "register"]

# Each factory takes (compression, setup) and returns (hook state, hook).
HOOKS: dict[CompressionKind, Callable[[Compression, HookSetup], tuple[object, Hook]]] = {
    CompressionKind.NONE: make_cast,
    CompressionKind.FP16: make_cast,
    CompressionKind.BF16: make_cast,
    CompressionKind.POWERSGD: make_powersgd,
    CompressionKind.TOPK: make_topk,
    CompressionKind.RANDOMK: make_randomk,
}


def register(
    ddp_model: DistributedDataParallel,
    compression: Compression | str,
    *,
    error_feedback: bool,
    powersgd_start_iter: int = POWERSGD_START_ITER,
    seed: int = 0,
) -> WireCounter:
    """Register the communication hook for ``compression`` on a DDP model.

    Every compressing kind goes through a hook that counts what it hands over; ``none`` keeps
    DDP's own all-reduce and counts the gradients' bytes per step (see below). Gradients are
    averaged over the whole group, as the DDP model's own all-reduce is. Call once, before the
    first backward; DDP takes one hook per model.

    Args:
        ddp_model: the DistributedDataParallel-wrapped model.
        compression: a Compression or its text (``"powersgd:4"``, ``"topk:0.01"``).
        error_feedback: for topk and randomk, carry unsent entries into the next step
            (PowerSGD always does).
        powersgd_start_iter: plain all-reduce steps before PowerSGD compresses (>= 2).
        seed: the same on every rank; seeds randomk's indices and PowerSGD's first Q.

    Returns:
        The counter the hook adds to; read it with ``take_step()`` once per optimizer step.
    """
    compression = Compression.parse(compression)
    if compression.kind is CompressionKind.NONE:
        # DDP's own all-reduce, in C++, as a plain torchrun script has it: a Python hook per
        # bucket cost a small model 7% of its step on 2 CPU cores (0.17 of 2.4 ms). Plain
        # all-reduce hands every bucket over once per synchronising backward (once per
        # optimizer step, accumulation included), so the step's bytes are the gradients'.
        return GradientBytes(sum(p.numel() * p.element_size() for p in ddp_model.parameters() if p.requires_grad))
    counter = WireCounter()
    setup = HookSetup(
        group=dist.group.WORLD,
        counter=counter,
        error_feedback=error_feedback,
        seed=seed,
        powersgd_start_iter=powersgd_start_iter,
    )
    state, hook = HOOKS[compression.kind](compression, setup)
    ddp_model.register_comm_hook(state, hook)
    return counter
