"""FSDP2 (``fully_shard``): every parameter split in dim 0 over the ranks. Each block gathers
its full weights just before it runs and frees them after; gradients are reduce-scattered, so
a rank keeps (and steps the optimizer on) only its shard.

ZeRO's names for it: stage 3 is FSDP's default (a block's gathered weights are freed after its
forward and gathered again in backward); stage 2 keeps them from forward to backward, one
all-gather per block and step instead of two, for a full replica's weights held at the peak.

``apply_fsdp`` is the last of compose's steps (engine/compose.py), as in torchtitan: it shards
what tensor parallelism left (fsdp+tensor: DTensors on the mesh's other dimension) and wraps
the checkpointed, compiled blocks, so its gather and free hooks stay outside the graphs."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

from parakit.config.own_model import WHOLE_MODEL
from parakit.engine.blocks import find_blocks
from parakit.engine.strategies.base import LossFn, Parallel, plain_forward_backward, unscaled

# ZeRO stage -> fully_shard's reshard_after_forward. Stage 3 and no stage leave it to FSDP:
# True for the blocks, False for the root, whose weights backward needs first anyway.
RESHARD_AFTER_FORWARD: dict[int | None, bool | None] = {None: None, 2: False, 3: None}


def shard(model: nn.Module, mesh, *, mp_policy: MixedPrecisionPolicy | None = None,
          zero: int | None = None, blocks: Any = None) -> tuple[nn.Module, list[str]]:
    """Shard each repeated block on its own (so only one block is gathered at a time), then the
    rest of the model (embeddings, head) as the root unit. A model without blocks (engine/
    blocks.py found none) is one unit: correct, but every weight is gathered at once, so the
    peak holds a whole replica, and no gathering overlaps compute.

    Returns:
        The sharded model, and the names of the blocks sharded on their own ([WHOLE_MODEL]
        where there were none).
    """
    options = {"mesh": mesh} if mp_policy is None else {"mesh": mesh, "mp_policy": mp_policy}
    reshard = RESHARD_AFTER_FORWARD[zero]
    if reshard is not None:
        options["reshard_after_forward"] = reshard
    found = find_blocks(model, blocks)
    for _, block in found:
        fully_shard(block, **options)
    return fully_shard(model, **options), [name for name, _ in found] or [WHOLE_MODEL]


def apply_fsdp(model: nn.Module, mesh, *, loss_fn: LossFn,
               scale_loss: Callable[[torch.Tensor], torch.Tensor] = unscaled,
               mp_policy: MixedPrecisionPolicy | None = None, zero: int | None = None,
               float8_all_gather: bool = False, blocks: Any = None) -> Parallel:
    """Shard ``model`` over ``mesh`` (a 1-D mesh: the data-parallel ranks).

    Args:
        model: the model, converted, tensor-parallel, checkpointed and compiled as the run asks.
        mesh: the ranks that split the batch, each holding a shard of every parameter.
        loss_fn: (outputs, targets) -> the loss.
        scale_loss: fp16's GradScaler.scale; the loss itself otherwise.
        mp_policy: FSDP's precision (parameters gathered in, gradients reduced in);
            None for fp32 throughout (engine/precision.py's fsdp_mixed_precision).
        zero: the ZeRO stage, 2 or 3 (None: FSDP's default, stage 3's behaviour).
        float8_all_gather: fp8 converted the model with float8 all-gather: every float8
            weight's scale is computed after each optimizer step, in one all-reduce.
        blocks: the run's ``blocks`` setting (None: found, engine/blocks.py).

    Returns:
        This rank's shard, ready for the loop.
    """
    sharded, units = shard(model, mesh, mp_policy=mp_policy, zero=zero, blocks=blocks)
    parallel = Parallel([sharded], plain_forward_backward(sharded, loss_fn, scale_loss),
                        no_sync=lambda: skip_gradient_sync(sharded), sharded_units=units)
    if float8_all_gather:
        from parakit.engine.fp8 import scale_precompute  # fp8 runs only: it imports torchao

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
