"""The optimizer a run steps, and what its state costs: AdamW over parameter groups that the
fused and foreach kernels accept, and the bytes a rank holds of parameters and state."""

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


def make_optimizer(params, lr: float, device: torch.device) -> torch.optim.AdamW:
    """AdamW over ``param_groups``. On a GPU, and where every parameter is a plain tensor, its
    fused form: one kernel per group where foreach launches several per chunk of tensors, and
    an fp16 step without GradScaler's host sync (the scaler hands it the overflow flag instead).
    Sharded parameters (DTensors: fsdp, tensor) keep foreach, which parakit has tested there."""
    groups = param_groups(params)
    plain = all(not hasattr(p, "device_mesh") for g in groups for p in g["params"])
    fused = {"fused": True} if device.type == "cuda" and plain else {}
    return torch.optim.AdamW(groups, lr=lr, **fused)


def local_bytes(tensors) -> int:
    """Bytes this rank holds of these tensors: the local shard of a DTensor, all of a tensor."""
    total = 0
    for t in tensors:
        t = t.to_local() if hasattr(t, "to_local") else t
        total += t.numel() * t.element_size()
    return total


def optimizer_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    return local_bytes(v for state in optimizer.state.values() for v in state.values()
                       if isinstance(v, torch.Tensor))
