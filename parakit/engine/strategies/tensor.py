"""Tensor parallelism with DTensor: Megatron's column-then-row pairs. A column-wise layer
splits its output features over the ranks (no communication); the row-wise layer after it
takes those slices as its split input and all-reduces its partial sums. One all-reduce per
pair in forward, one in backward. Layers outside the plan stay replicated."""

from __future__ import annotations

from collections.abc import Mapping

from torch import nn
from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

from parakit.engine.checkpointing import apply_checkpointing
from parakit.engine.strategies.base import Context, Parallel, plain_forward_backward

STYLES = {"colwise": ColwiseParallel, "rowwise": RowwiseParallel}


def gpt_plan(model: nn.Module) -> dict[str, str]:
    plan = {}
    for i in range(len(model.blocks)):
        b = f"blocks.{i}"
        # q, k, v split by heads; proj gathers the heads' outputs back with its all-reduce.
        plan.update({f"{b}.attn.q": "colwise", f"{b}.attn.k": "colwise", f"{b}.attn.v": "colwise",
                     f"{b}.attn.proj": "rowwise", f"{b}.mlp.0": "colwise", f"{b}.mlp.2": "rowwise"})
    return plan


def mlp_plan(model: nn.Module) -> dict[str, str]:
    # Consecutive blocks pair up (the GELU between them is element-wise, so it runs on the
    # slices); an odd last block stays replicated.
    plan = {}
    for i in range(0, len(model.blocks) - 1, 2):
        plan.update({f"blocks.{i}.0": "colwise", f"blocks.{i + 1}.0": "rowwise"})
    return plan


BUILT_IN_PLANS = {"gpt": gpt_plan, "mlp": mlp_plan}


def parallelize(model: nn.Module, ctx: Context, mesh) -> nn.Module:
    config = ctx.config
    plan: Mapping[str, str] = config.tp_plan or BUILT_IN_PLANS[config.model](model)
    names = {name for name, _ in model.named_modules()}
    missing = [name for name in plan if name not in names]
    if missing:
        raise ValueError(f"tp_plan names modules the model does not have: {', '.join(missing)}")
    return parallelize_module(model, mesh, {name: STYLES[style]() for name, style in plan.items()})


def apply_tensor(model: nn.Module, ctx: Context) -> Parallel:
    from torch.distributed.device_mesh import init_device_mesh

    mesh = init_device_mesh(ctx.device.type, (ctx.world_size,), mesh_dim_names=("tensor",))
    model = parallelize(model, ctx, mesh)
    apply_checkpointing(model, ctx.config.activation_checkpointing)  # after the plan: it names modules
    # Every rank reads the whole batch: tensor parallelism splits the model, not the data.
    return Parallel([model], plain_forward_backward(model, ctx))
