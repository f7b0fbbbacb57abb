"""The optimizer a run steps, and what its state costs: AdamW over parameter groups that the
fused and foreach kernels accept, sharded over the ranks under ZeRO stage 1, and the bytes a
rank holds of parameters and state."""

from __future__ import annotations

from typing import Any

import torch


def param_groups(params) -> list[dict[str, Any]]:
    """Parameters grouped by the mesh they are sharded on (plain tensors apart). On a GPU the
    optimizer updates a group with fused multi-tensor (foreach) kernels, and those refuse a
    list that mixes DTensors with plain tensors, as tensor parallelism leaves embeddings."""
    groups: dict[Any, list] = {}
    for p in params:
        mesh = getattr(p, "device_mesh", None)
        groups.setdefault(None if mesh is None else id(mesh), []).append(p)
    return [{"params": ps} for ps in groups.values()]


def make_optimizer(params, lr: float, device: torch.device, *, zero: int | None = None,
                   group=None) -> torch.optim.Optimizer:
    """AdamW over ``param_groups``. On a GPU, and where every parameter is a plain tensor, its
    fused form: one kernel per group where foreach launches several per chunk of tensors, and
    an fp16 step without GradScaler's host sync (the scaler hands it the overflow flag instead).
    Sharded parameters (DTensors: fsdp, tensor) keep foreach, which parakit has tested there.

    Args:
        params: the parameters this rank updates.
        lr: the learning rate.
        device: where the parameters live.
        zero: the run's ZeRO stage. Stage 1 (ddp) shards the optimizer state over ``group``;
            stages 2 and 3 are FSDP's sharding, done by the strategy, so AdamW here is plain.
        group: the data-parallel process group stage 1 shards over (None: the whole world).

    Returns:
        The optimizer the training loop steps.
    """
    groups = param_groups(params)
    plain = all(not hasattr(p, "device_mesh") for g in groups for p in g["params"])
    fused = {"fused": True} if device.type == "cuda" and plain else {}
    if zero == 1:
        return sharded_adamw(groups, lr, fused, group)
    return torch.optim.AdamW(groups, lr=lr, **fused)


def sharded_adamw(groups: list[dict[str, Any]], lr: float, fused: dict[str, bool], group):
    """ZeRO stage 1: each rank keeps AdamW's moments for its share of the parameters (whole
    tensors, assigned largest first to the rank with the fewest elements so far), steps only
    those, then broadcasts them to the other ranks. It costs one broadcast per bucket of a
    rank's parameters after every step, on top of DDP's all-reduce. The same groups and lr as
    the plain optimizer, so the run is the same run. GradScaler (fp16) treats it as any other
    optimizer: unscale_ and the inf check cover every gradient, which DDP made equal on every
    rank, so all ranks skip or step together; it takes the unfused step path, which syncs."""
    # Imported here: torch.distributed.optim costs ~0.9 s of imports on a 2-core CPU, which
    # runs without ZeRO need not pay.
    from torch.distributed.optim import ZeroRedundancyOptimizer

    # parameters_as_bucket_view: a rank's parameters live in one flat buffer per device, so the
    # broadcast after the step is one call per rank instead of one per parameter.
    return ZeroRedundancyOptimizer(groups, torch.optim.AdamW, process_group=group,
                                   parameters_as_bucket_view=True, lr=lr, **fused)


def local_bytes(tensors) -> int:
    """Bytes this rank holds of these tensors: the local shard of a DTensor, all of a tensor."""
    total = 0
    for t in tensors:
        t = t.to_local() if hasattr(t, "to_local") else t
        total += t.numel() * t.element_size()
    return total


def optimizer_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes of optimizer state this rank holds. ZeroRedundancyOptimizer keeps this rank's
    shard in its local optimizer, ``.optim``; its own ``.state`` is left empty."""
    local = getattr(optimizer, "optim", optimizer)
    return local_bytes(v for state in local.state.values() for v in state.values()
                       if isinstance(v, torch.Tensor))
