"""2-D meshes over the ranks, outer dimension first (``mesh="2x2"``):

- ``fsdp+tensor``: tensor parallel inside each row, FSDP across rows (torchtitan's 2-D);
- ``ddp+tensor``: tensor parallel inside each row, the rows' gradients all-reduced;
- ``pipeline+ddp``: pipeline stages along the outer dimension, each stage replicated along the
  inner one, its gradients all-reduced over the replicas.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.device_mesh import init_device_mesh

from parakit.config.run import Hybrid
from parakit.engine.checkpointing import apply_checkpointing
from parakit.engine.strategies.base import Context, Parallel, plain_forward_backward
from parakit.engine.strategies.fsdp import shard
from parakit.engine.strategies.pipeline import make_pipeline
from parakit.engine.strategies.tensor import parallelize


def _mesh(ctx: Context, names: tuple[str, str]):
    """The run's 2-D mesh, its sizes and names from the parallel degrees (config/degrees.py)."""
    dims = ctx.config.dims
    assert dims.mesh_names == names, f"{ctx.config.hybrid} lays ranks out as {dims.mesh_names}, not {names}"
    return init_device_mesh(ctx.device.type, dims.mesh_shape, mesh_dim_names=dims.mesh_names)


def fsdp_tensor(model: nn.Module, ctx: Context) -> Parallel:
    mesh = _mesh(ctx, ("data", "tensor"))
    # torchtitan's order: tensor parallel, then activation checkpointing, then FSDP.
    model = parallelize(model, ctx, mesh["tensor"])
    apply_checkpointing(model, ctx.config.activation_checkpointing)
    model = shard(model, ctx, mesh=mesh["data"])
    data = mesh["data"]
    return Parallel([model], plain_forward_backward(model, ctx),
                    data_rank=data.get_local_rank(), data_size=data.size())


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


def ddp_tensor(model: nn.Module, ctx: Context) -> Parallel:
    mesh = _mesh(ctx, ("data", "tensor"))
    model = parallelize(model, ctx, mesh["tensor"])
    apply_checkpointing(model, ctx.config.activation_checkpointing)
    data = mesh["data"]
    inner = plain_forward_backward(model, ctx)
    params = list(model.parameters())

    def forward_backward(inputs, targets):
        loss = inner(inputs, targets)
        average_gradients(params, data.get_group(), data.size())
        return loss

    return Parallel([model], forward_backward, data_rank=data.get_local_rank(), data_size=data.size())


def pipeline_ddp(model: nn.Module, ctx: Context) -> Parallel:
    mesh = _mesh(ctx, ("pipeline", "data"))
    pp, data = mesh["pipeline"], mesh["data"]
    # Not DDP's wrapper: its reducer, seeing one backward per micro-batch in the first step,
    # fails an internal check when it rebuilds buckets (torch 2.13). The replicas' gradients
    # are all-reduced once per step, after the schedule, instead.
    parallel = make_pipeline(model, ctx, pp.get_local_rank(), pp.size(), pp.get_group(),
                             data_rank=data.get_local_rank(), data_size=data.size())
    inner, params = parallel.forward_backward, list(parallel.parameters())

    def forward_backward(inputs, targets):
        loss = inner(inputs, targets)
        average_gradients(params, data.get_group(), data.size())
        return loss

    parallel.forward_backward = forward_backward
    return parallel


HYBRIDS = {Hybrid.FSDP_TENSOR: fsdp_tensor, Hybrid.DDP_TENSOR: ddp_tensor, Hybrid.PIPELINE_DDP: pipeline_ddp}


def apply_hybrid(model: nn.Module, ctx: Context) -> Parallel:
    return HYBRIDS[ctx.config.hybrid](model, ctx)
