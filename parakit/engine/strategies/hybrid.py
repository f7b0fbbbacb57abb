"""The data-parallel step of two 2-D layouts (``mesh="2x2"``, outer dimension first):

- ``ddp+tensor``: tensor parallel inside each row, the rows' gradients all-reduced;
- ``pipeline+ddp``: pipeline stages along the outer dimension, each stage replicated along the
  inner one, its gradients all-reduced over the replicas.

(``fsdp+tensor``, torchtitan's 2-D, takes fsdp's own step over the mesh's data dimension.)
Both all-reduce after backward, once per step, instead of wrapping the model in DDP: see
``average_gradients`` and ``apply_gradient_average`` for why.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from parakit.engine.strategies.base import Parallel


def average_gradients(params: list[nn.Parameter], group, size: int) -> None:
    """All-reduce the local shards of every gradient over ``group`` as one flat buffer and
    average: what DDP does, after backward instead of overlapped with it, because DDP's
    module wrapper does not take the DTensor parameters tensor parallelism leaves behind."""
    grads = [p.grad.to_local() if hasattr(p.grad, "to_local") else p.grad for p in params if p.grad is not None]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, group=group)
    flat /= size
    offset = 0
    for g in grads:
        g.copy_(flat[offset: offset + g.numel()].view_as(g))
        offset += g.numel()


def apply_gradient_average(parallel: Parallel, mesh) -> Parallel:
    """Average ``parallel``'s gradients over ``mesh`` after each forward and backward.

    Not DDP's wrapper for a pipeline either: its reducer, seeing one backward per micro-batch
    in the first step, fails an internal check when it rebuilds buckets (torch 2.13).

    Args:
        parallel: the tensor-parallel model or this rank's pipeline stages.
        mesh: a 1-D device mesh: the replicas of what this rank holds.

    Returns:
        ``parallel``, its forward_backward now ending with the all-reduce.
    """
    inner, params, group, size = parallel.forward_backward, list(parallel.parameters()), mesh.get_group(), mesh.size()

    def forward_backward(inputs, targets):
        loss = inner(inputs, targets)
        average_gradients(params, group, size)
        return loss

    parallel.forward_backward = forward_backward
    return parallel
