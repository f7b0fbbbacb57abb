"""Tensor parallelism with DTensor: Megatron's column-then-row pairs. A column-wise layer
splits its output features over the ranks (no communication); the row-wise layer after it
takes those slices as its split input and all-reduces its partial sums. One all-reduce per
pair in forward, one in backward. Layers outside the plan stay replicated.

``apply_tensor`` is the second of compose's steps (engine/compose.py), after fp8's conversion
and before checkpointing, as in torchtitan: the plan names modules of the model as built, and
FSDP (fsdp+tensor) shards the DTensors it leaves."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from torch import nn
from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

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


BUILT_IN_PLANS: dict[str, Callable[[nn.Module], dict[str, str]]] = {"gpt": gpt_plan, "mlp": mlp_plan}


def plan_for(model: nn.Module, tp_plan: Mapping[str, str] | None, workload) -> Mapping[str, str]:
    """The user's plan, else the built-in model's (RunConfig refused a model with neither)."""
    return tp_plan or BUILT_IN_PLANS[workload](model)


def apply_tensor(model: nn.Module, mesh, plan: Mapping[str, str]) -> nn.Module:
    """Split the layers ``plan`` names over ``mesh``, in place.

    Args:
        model: the built model (fp8 is not converted under tensor layouts).
        mesh: a 1-D device mesh: the ranks that each hold a slice of every planned layer.
        plan: module name -> "colwise" or "rowwise".

    Returns:
        The model, its planned layers' weights DTensors sharded over ``mesh``.

    Raises:
        ValueError: the plan names a module the model does not have.
    """
    names = {name for name, _ in model.named_modules()}
    missing = [name for name in plan if name not in names]
    if missing:
        raise ValueError(f"tp_plan names modules the model does not have: {', '.join(missing)}")
    return parallelize_module(model, mesh, {name: STYLES[style]() for name, style in plan.items()})
