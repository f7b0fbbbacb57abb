"""The settings that name parts of a model (``tp_plan``, ``split``, ``blocks``), checked against
the model itself before any engine is touched: it is built on the meta device in the notebook's
process (no memory, no time; on the CPU where it cannot be), as the memory model builds it
(engine/shape.py). session/preflight.py calls ``check_model_settings`` for every run of a model
of your own that sets one of them, so a mistake is one line, not a failed run on the engines.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from parakit.config.own_model import AUTO_PLAN
from parakit.config.run import RunConfig
from parakit.engine.batches import make_batches, slice_rows, to_device
from parakit.engine.blocks import find_blocks
from parakit.engine.shape import build_model_of
from parakit.engine.strategies.stages import cache_off, cannot_cut, split_points, traced_stages, why_not_by_module
from parakit.engine.strategies.tensor import model_plan, plan_for

META = torch.device("meta")

# The last name of the projections that make attention's queries, keys and values: split
# column-wise, each rank must get whole heads.
QKV_NAMES = frozenset({"q", "k", "v", "q_proj", "k_proj", "v_proj", "query", "key", "value", "qkv", "qkv_proj",
                       "c_attn", "Wqkv", "in_proj", "query_key_value"})


def check_model_settings(config: RunConfig) -> list[str]:
    """Check ``config``'s tp_plan, split and blocks against its model, built on the meta device.

    Args:
        config: a run, sound in itself (RunConfig checked it).

    Returns:
        Notes for the user (what ``tp_plan="auto"`` left out); [] where there is nothing to say
        or nothing to check (a built-in model, no setting that names modules).

    Raises:
        ValueError: in one line: a name the model does not have (with the nearest names), a
            plan that splits attention heads or features unevenly, or a model a pipeline can
            cut neither traced nor by module.
    """
    tensor = config.tensor_degree > 1 and config.tp_plan is not None
    cut = config.uses_pipeline and not isinstance(config.model, str)
    if isinstance(config.model, str) or not (tensor or cut or config.blocks is not None):
        return []
    model, _ = build_model_of(config)
    notes = []
    if config.blocks is not None:
        find_blocks(model, config.blocks)  # raises for a name the model does not have
    if tensor:
        notes += check_plan(model, config.tp_plan, config.tensor_degree)
    if cut:
        check_cut(model, config)
    return notes


def check_plan(model: nn.Module, tp_plan: Any, degree: int) -> list[str]:
    """A tensor plan against the model: every key matches a module, every planned module is an
    nn.Linear or nn.Embedding whose split dimension and heads divide by ``degree``. Returns
    the note on what "auto" left out."""
    notes = []
    if tp_plan == AUTO_PLAN:
        _, left_out = model_plan(model)
        if left_out:
            entries = ", ".join(f"{name} ({style})" for name, style in left_out.items())
            notes.append(f"tp_plan='auto': {type(model).__name__}'s own plan also splits {entries}; parakit has "
                         "colwise and rowwise only, so those stay whole on every rank")
    modules = dict(model.named_modules())
    for name, style in plan_for(model, tp_plan, None).items():
        _check_planned(name, modules[name], style, degree, model)
    return notes


def _check_planned(name: str, module: nn.Module, style: str, degree: int, model: nn.Module) -> None:
    if not isinstance(module, (nn.Linear, nn.Embedding)):
        kind = type(module).__name__
        hint = " (transformers' Conv1D, GPT-2's, keeps its weight transposed)" if kind == "Conv1D" else ""
        raise ValueError(f"tp_plan splits {name}, a {kind}{hint}; colwise and rowwise split nn.Linear and "
                         "nn.Embedding only: leave it out of the plan")
    if isinstance(module, nn.Linear):
        size, what = (module.out_features, "output features") if style == "colwise" else (module.in_features,
                                                                                             "input features")
    else:
        size, what = (module.embedding_dim, "embedding width") if style == "colwise" else (module.num_embeddings,
                                                                                           "vocabulary")
    if size % degree:
        raise ValueError(f"tp_plan splits {name}'s {size} {what} over {degree} ranks, which does not divide; "
                         f"use a tensor degree that divides {size}, or leave {name} out of the plan")
    heads = _heads(name, module, model) if style == "colwise" else None
    if heads is not None and heads % degree:
        raise ValueError(f"tp_plan splits {name}'s {heads} attention heads over {degree} ranks, which does not "
                         f"divide: each rank needs whole heads; leave attention out of the plan, or use a tensor "
                         f"degree that divides {heads}")


def _heads(name: str, module: nn.Module, model: nn.Module) -> int | None:
    """How many attention heads a column-wise query, key or value projection makes; None
    where ``name`` is not one, or the model does not say its head size."""
    parent_name, _, last = name.rpartition(".")
    if last not in QKV_NAMES or not isinstance(module, nn.Linear):
        return None
    parent = model.get_submodule(parent_name) if parent_name else model
    config = getattr(model, "config", None)
    head_dim = getattr(parent, "head_dim", None) or getattr(config, "head_dim", None)
    if not head_dim and getattr(config, "num_attention_heads", None):
        head_dim = config.hidden_size // config.num_attention_heads
    if isinstance(head_dim, int) and head_dim > 0 and module.out_features % head_dim == 0:
        return module.out_features // head_dim
    heads = next((getattr(parent, a) for a in ("num_heads", "n_head", "heads") if isinstance(getattr(parent, a, None), int)),
                 None)
    return heads


def check_cut(model: nn.Module, config: RunConfig) -> None:
    """A pipeline's split points against the model, and whether it can be cut: traced by
    torch.export on the meta device, unless it can be cut by module anyway (strategies/
    stages.py says both). The trace costs about as long as on an engine, a second or two."""
    # a model of your own gives its split points (RunConfig insists): no balancing to do here
    points = split_points(model, config.split, len(config.split or ()) + 1, config.blocks)
    why = why_not_by_module(model, points)
    if why is None:
        return
    inputs, _ = make_batches(config, 0, 1).rows(0, config.batch_size, 0, config.per_rank_batch_size)
    microbatch = to_device(slice_rows(inputs, 0, max(1, config.per_rank_batch_size // config.n_microbatches)), META)
    cache_off(model)
    try:
        traced_stages(model.to("meta"), microbatch, points)
    except RuntimeError as e:
        raise ValueError(cannot_cut(model, e, why)) from None

