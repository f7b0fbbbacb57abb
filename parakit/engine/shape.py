"""The model's shape for the cost model, from passes on the meta device (no memory, no time):
per part in execution order its parameters, forward + backward FLOPs per row, activations kept
for backward per row, what it hands on, and what tensor parallelism splits and all-reduces.

Runs in the notebook's process (torch, no engine): a built-in model or the user's callable is
built on the meta device (on the CPU if it cannot be), fed one and two rows of its real first
batch; per-row figures are the difference, so the weights saved for backward cancel out.
"""

from __future__ import annotations

import contextlib
import re
from collections import defaultdict
from dataclasses import replace
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from parakit.config.shape import ModelShape, Part
from parakit.config.run import RunConfig
from parakit.engine.batches import make_batches, slice_rows
from parakit.engine.blocks import block_names
from parakit.engine.losses import forward_loss, loss_function
from parakit.engine.strategies.stages import balanced_cuts
from parakit.engine.strategies.tensor import BUILT_IN_PLANS, plan_for
from parakit.engine.workloads import build_model
from parakit.engine.workloads.moe import moe_layers


def model_shape(config: RunConfig) -> ModelShape:
    """The shape of ``config``'s model (its model, model_options, data, loss, split, tp_plan,
    blocks)."""
    model, device = build_model_of(config)
    try:
        one, two = _passes(model, config, device)
    except Exception as e:  # noqa: BLE001 - sorted below: only meta's refusal is retried
        if device != "meta" or not _needs_real_tensors(e):
            raise
        # built on meta, but its forward reads values (a transformers mask's .item()): on the CPU
        model, device = build_model_of(config, on_meta=False)
        one, two = _passes(model, config, device)
    named, blocks = _parts(model, config.blocks), set(block_names(model, config.blocks))
    order = [name for name in one["order"] if name in named]
    has_plan = config.tp_plan is not None or config.model in BUILT_IN_PLANS
    plan = plan_for(model, config.tp_plan, config.model) if has_plan else None
    tensor = _tensor_measures(model, plan or {}, one, two, order)
    root = type(model).__name__
    parts = []
    for name in order:
        module = named[name]
        parts.append(Part(
            name=name, params=sum(p.numel() for p in module.parameters()),
            flops_per_sample=one["flops"].get(f"{root}.{name}", 0.0),
            layers=sum(1 for m in module.modules() if not list(m.children())),
            saved_bytes_per_sample=two["saved"][name] - one["saved"][name],
            output_bytes_per_sample=two["output"][name] - one["output"][name],
            is_block=name in blocks, **tensor.get(name, {}),
            expert_params=sum(p.numel() for layer in moe_layers(module) for p in layer.experts.parameters()),
        ))
        if parts[-1].tensor_flops_per_sample > parts[-1].flops_per_sample:  # a first layer has no input gradient
            parts[-1] = replace(parts[-1], tensor_flops_per_sample=parts[-1].flops_per_sample)
    matrices = tuple((p.shape[0], p.numel() // p.shape[0]) for p in model.parameters() if p.dim() >= 2)
    return ModelShape(name=_model_name(config),
                      parts=tuple(parts), matrices=matrices, stage_starts=_stage_starts(model, parts, config),
                      tensor_plan=plan is not None)


def _passes(model: nn.Module, config: RunConfig, device: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """``_measure`` of one row and of two rows of the run's first batch."""
    inputs, targets = make_batches(config, 0, 1).rows(0, max(2, config.batch_size), 0, 2)
    named, loss_fn = _parts(model, config.blocks), loss_function(config.loss)
    one, two = (_measure(model, named, _on(slice_rows(inputs, 0, rows), device),
                         _on(slice_rows(targets, 0, rows), device), loss_fn) for rows in (1, 2))
    return one, two


def build_model_of(config: RunConfig, on_meta: bool = True) -> tuple[nn.Module, str]:
    """The model on the meta device, or on the CPU when building it needs real tensors. Any
    other failure is the model's own: it is raised once, naming the model, not built again."""
    torch.manual_seed(config.seed)
    make = (lambda: build_model(config.model, dict(config.model_options))) if isinstance(config.model, str) else config.model
    if not on_meta:
        return make(), "cpu"
    try:
        with torch.device("meta"):
            return make(), "meta"
    except Exception as e:  # noqa: BLE001 - sorted below: only meta's refusal is retried
        if not _needs_real_tensors(e):
            raise RuntimeError(f"cannot build the model {_model_name(config)!r} to measure its shape: "
                               f"{type(e).__name__}: {e}") from e
    return make(), "cpu"


_META = re.compile(r"(?<![a-z])meta(?![a-z])", re.IGNORECASE)  # "meta tensors", "register_meta"; not "metadata"


def _needs_real_tensors(error: Exception) -> bool:
    """Whether torch refused an operation because the tensors are on the meta device, which
    holds no data: ``.item()`` or a copy to the CPU (an init that reads values), or an operator
    without a meta kernel. Every such refusal names the meta device; a bug in the model does not,
    and building it again would only run it twice."""
    return _META.search(str(error)) is not None


def _model_name(config: RunConfig) -> str:
    return config.model if isinstance(config.model, str) else getattr(config.model, "__name__", "model")


def _on(batch: Any, device: str) -> Any:
    """``batch`` on ``device``, each tensor its own copy: a row sliced off a batch would share
    the batch's storage, and saved bytes are counted by storage."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, copy=True)
    if isinstance(batch, (tuple, list)):
        return type(batch)(_on(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: _on(v, device) for k, v in batch.items()}
    return batch


def _parts(model: nn.Module, blocks_setting: Any = None) -> dict[str, nn.Module]:
    """The model in parts: its repeated blocks (engine/blocks.py, at any depth), and around
    them the largest modules that hold no block (a top-level child; inside a wrapper such as
    transformers' ``model.model``, its embeddings and final norm). A list that is not the
    blocks' is left out, as it runs nothing itself."""
    blocks = set(block_names(model, blocks_setting))
    holders = {name.rsplit(".", i)[0] for name in blocks for i in range(1, name.count(".") + 1)}
    out: dict[str, nn.Module] = {}

    def visit(prefix: str, module: nn.Module) -> None:
        for name, child in module.named_children():
            full = f"{prefix}{name}"
            if full in blocks:
                out[full] = child
            elif full in holders:
                visit(f"{full}.", child)
            elif not isinstance(child, nn.ModuleList):
                out[full] = child

    visit("", model)
    return out


def _measure(model, named, inputs, targets, loss_fn) -> dict[str, Any]:
    """One forward + backward: FLOPs per module, bytes saved for backward and output bytes per
    part, and the order parts ran in."""
    current: list[str] = []  # the parts running now, innermost last
    saved: dict[str, float] = defaultdict(float)
    output: dict[str, float] = defaultdict(float)
    inputs_bytes: dict[str, float] = defaultdict(float)
    order: list[str] = []

    def enter(name):
        def hook(module, args):
            inputs_bytes[name] += sum(a.nbytes for a in args if isinstance(a, torch.Tensor))
            if name in named:
                current.append(name)
                if name not in order:
                    order.append(name)
        return hook

    def leave(name):
        def hook(module, args, out):
            output[name] += out.nbytes if isinstance(out, torch.Tensor) else 0
            if name in named:
                current.pop()
        return hook

    seen: dict[int, torch.Tensor] = {}  # storages counted, held for the pass (no address reused)

    def pack(t):
        # Storage by storage, as the runs count (engine/memory.py): a tensor saved by several
        # operators, or views of one (q, k and v of one projection), are held once. Meta tensors
        # have no data pointer, so a storage is known by its own object's address.
        storage = t.untyped_storage()
        if storage._cdata not in seen:
            seen[storage._cdata] = t
            # What the loss keeps (the logits) belongs to the part that made them, the last one.
            saved[current[-1] if current else (order[-1] if order else "")] += storage.nbytes()
        return t

    every = {n: m for n, m in model.named_modules() if n}
    handles = [m.register_forward_pre_hook(enter(n)) for n, m in every.items()]
    handles += [m.register_forward_hook(leave(n)) for n, m in every.items()]
    try:
        with FlopCounterMode(display=False) as counter, torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            with FlopCounterMode(display=False) as forward:
                loss = forward_loss(model, loss_fn, inputs, targets)
            loss.backward()
    finally:
        for h in handles:
            h.remove()
    model.zero_grad(set_to_none=True)
    # Forward + backward per part. Backward FLOPs are attributed right to a part but not always
    # to the layers inside it, so a layer's own figure is its forward FLOPs.
    return {"flops": _totals(counter), "forward_flops": _totals(forward), "saved": saved, "output": output,
            "inputs": inputs_bytes, "order": order}


def _totals(counter: FlopCounterMode) -> dict[str, float]:
    return {k: float(sum(v.values())) for k, v in counter.get_flop_counts().items()}


def _tensor_measures(model, plan, one, two, order) -> dict[str, dict[str, float]]:
    """Per part: parameters and FLOPs of its planned layers, and the bytes all-reduced per row
    (a row-wise layer's output forward, a column-wise layer's input gradient backward)."""
    root = type(model).__name__
    modules = dict(model.named_modules())
    out: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for name, style in plan.items():
        part = next((p for p in order if name == p or name.startswith(p + ".")), None)
        if part is None or name not in modules:
            continue
        measures = out[part]
        measures["tensor_params"] += sum(p.numel() for p in modules[name].parameters())
        # a matmul's backward computes twice its forward (the input's and the weight's gradients)
        measures["tensor_flops_per_sample"] += 3 * one["forward_flops"].get(f"{root}.{name}", 0.0)
        moved = two["output"] if style == "rowwise" else two["inputs"]
        base = one["output"] if style == "rowwise" else one["inputs"]
        measures["tensor_allreduce_bytes_per_sample"] += moved[name] - base[name]
        measures["tensor_allreduces"] += 1
    return {p: {k: (int(v) if k in ("tensor_params", "tensor_allreduces") else v) for k, v in f.items()}
            for p, f in out.items()}


def _stage_starts(model: nn.Module, parts: list[Part], config: RunConfig) -> dict[int, tuple[int, ...]]:
    """Where each pipeline stage begins, per stage count: the user's split, or the engine's own
    parameter-balanced cuts of the blocks (pipeline.balanced_cuts)."""
    names = [p.name for p in parts]
    if config.split:
        with contextlib.suppress(StopIteration):
            starts = tuple(next(i for i, n in enumerate(names) if n == s or n.startswith(s + ".")) for s in config.split)
            return {len(starts) + 1: starts}
        return {}
    blocks = [i for i, p in enumerate(parts) if p.is_block]
    sizes = [parts[i].params for i in blocks]
    return {stages: tuple(blocks[c] for c in balanced_cuts(sizes, stages)) for stages in range(2, len(blocks) + 1)}
