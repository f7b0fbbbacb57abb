"""ZeRO-1's optimizer state in the form every other layout saves: flattened by parameter name.

ZeroRedundancyOptimizer keeps each rank's share of AdamW's state in a plain local AdamW
(``.optim``), and torch's state-dict helpers do not read it. Each rank writes its own
parameters' entries under the keys ``get_optimizer_state_dict(flatten_optimizer_state_dict=True)``
uses ("state.blocks.0.attn.q.weight.exp_avg", "param_groups.blocks.0.attn.q.weight.lr"): the
ranks' shares are disjoint and together cover every parameter, so a ZeRO run's state loads
into any layout, and any layout's into a ZeRO run, without gathering it on one rank first.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.distributed.checkpoint.state_dict import _init_optim_state


def is_zero(optimizer: torch.optim.Optimizer) -> bool:
    return type(optimizer).__name__ == "ZeroRedundancyOptimizer"


def _names(model: torch.nn.Module) -> dict[torch.nn.Parameter, str]:
    plain = getattr(model, "module", model)  # DDP's wrapper: the model's own names
    return {p: name for name, p in plain.named_parameters()}


def flat_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """This rank's share of the optimizer state, flattened by parameter name. The state is made
    first where it does not exist yet (a step with zero gradients and lr 0), as torch's helper does."""
    local = optimizer.optim
    _init_optim_state(local)
    names, out = _names(model), {}
    for group in local.param_groups:
        settings = {k: v for k, v in group.items() if k != "params"}
        for p in group["params"]:
            for key, value in local.state[p].items():
                out[f"state.{names[p]}.{key}"] = value
            for key, value in settings.items():
                out[f"param_groups.{names[p]}.{key}"] = value
    return out


def load_flat_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, flat: dict[str, Any]) -> None:
    """Copy what ``flat`` holds (as filled by dcp.load into ``flat_state``'s tensors) into this
    rank's share; the groups' settings (lr, betas, ...) are the run's own and stay."""
    local, names = optimizer.optim, _names(model)
    for group in local.param_groups:
        for p in group["params"]:
            for key, value in local.state[p].items():
                loaded = flat[f"state.{names[p]}.{key}"]
                if torch.is_tensor(value):
                    value.copy_(loaded)
                else:
                    local.state[p][key] = loaded
