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

from parakit.config.own_model import AUTO_PLAN
from parakit.engine.names import matching, nearest

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


def plan_for(model: nn.Module, tp_plan: Mapping[str, str] | str | None, workload) -> dict[str, str]:
    """The plan a run lays out, by the model's module names: the user's (a ``*`` matching any
    one name), the model's own for "auto" (``model_plan``), else the built-in model's.

    Raises:
        ValueError: a key matches no module of the model (naming the nearest), or "auto" on a
            model that has no plan of its own.
    """
    if isinstance(workload, str) and (tp_plan is None or tp_plan == AUTO_PLAN):
        return BUILT_IN_PLANS[workload](model)
    if tp_plan == AUTO_PLAN:
        plan, _ = model_plan(model)
        if not plan:
            raise ValueError(f"tp_plan='auto' takes a transformers model's own plan (config.base_model_tp_plan); "
                             f"{type(model).__name__} has none with colwise or rowwise layers: give tp_plan={{...}}")
        # the model's own plan may name modules this variant lacks (a head it has not): skipped
        names = [name for name, _ in model.named_modules() if name]
        tp_plan = {key: style for key, style in plan.items() if matching(key, names)}
    return expand_plan(model, tp_plan)


def model_plan(model: nn.Module) -> tuple[dict[str, str], dict[str, str]]:
    """A transformers model's own tensor plan, keys relative to ``model``: its base model's
    ``config.base_model_tp_plan`` prefixed with where the base model sits (``model.layers.*``
    under LlamaForCausalLM), then the model's ``_tp_plan`` (its head's entries).

    Returns:
        (the entries in styles parakit has, colwise and rowwise; those in others, e.g.
        transformers' embedding_rowwise and colwise_gather_output, which it leaves out).
    """
    base = getattr(getattr(model, "config", None), "base_model_tp_plan", None) or {}
    base_model = getattr(model, "base_model", model)
    where = next((name for name, module in model.named_modules() if module is base_model), "")
    found = {f"{where}.{key}" if where else key: style for key, style in base.items()}
    for key, style in (getattr(model, "_tp_plan", None) or {}).items():
        found.setdefault(key, style)
    kept = {key: style for key, style in found.items() if style in STYLES}
    return kept, {key: style for key, style in found.items() if style not in STYLES}


def expand_plan(model: nn.Module, plan: Mapping[str, str]) -> dict[str, str]:
    """``plan`` with each key's ``*`` matched to the model's module names, as
    ``parallelize_module`` matches them (engine/names.py).

    Raises:
        ValueError: a key matches no module, in one line naming the nearest names.
    """
    names = [name for name, _ in model.named_modules() if name]
    expanded: dict[str, str] = {}
    for key, style in plan.items():
        found = matching(key, names)
        if not found:
            raise ValueError(f"tp_plan key {key!r} matches no module of the model; {nearest(key, names)}")
        expanded.update(dict.fromkeys(found, style))
    return expanded


def apply_tensor(model: nn.Module, mesh, plan: Mapping[str, str]) -> nn.Module:
    """Split the layers ``plan`` names over ``mesh``, in place.

    Args:
        model: the built model (fp8 is not converted under tensor layouts).
        mesh: a 1-D device mesh: the ranks that each hold a slice of every planned layer.
        plan: module name -> "colwise" or "rowwise" (``plan_for``'s, names expanded).

    Returns:
        The model, its planned layers' weights DTensors sharded over ``mesh``.

    Raises:
        ValueError: the plan names a module the model does not have.
    """
    plan = expand_plan(model, plan)
    return parallelize_module(model, mesh, {name: STYLES[style]() for name, style in plan.items()})
