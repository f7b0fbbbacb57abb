"""Activation checkpointing for a run, applied as torchtitan applies it: to each repeated block
(the units FSDP shards), after tensor parallelism and before compile, FSDP or DDP (the order
is compose's, engine/compose.py).

- ``full``: a block keeps only its input; backward runs the block's forward again to rebuild
  what its gradients need. Activations held fall to the blocks' inputs plus one block's worth
  at a time in backward, for one more forward per step (about a third more compute).
- ``selective``: torchtitan's op-level policy. The outputs of the expensive ops (matmuls,
  attention, collectives) are kept; the cheap element-wise ops around them (layer norm, GELU,
  adds, views) are recomputed. Less memory saved than ``full``, almost no extra compute.

Each block's ``forward`` is replaced, on the instance, by one that runs the original inside
``torch.utils.checkpoint``: what torchtitan's checkpoint wrapper module does, without the
wrapper, so no module is renamed and tensor parallel plans, the optimizer's parameters and a
saved state dict see the names they see without it. The checkpoint is inside ``forward``, not
in hooks around it (torch's composable ``checkpoint``), so that compile, applied next to the
same ``forward``, takes it into the graph: the compiler then plans the recomputation, and
selective checkpointing's policy sees the ops it picks from, not one opaque compiled call.
Module hooks stay outside: FSDP2 gathers a block's weights in its pre-backward hook before the
recomputation needs them. It is the non-reentrant form, torch's recommended one, which
composes with DDP's and FSDP2's hooks (the reentrant form needs DDP's static_graph=True).
"""

from __future__ import annotations

import functools

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint, create_selective_checkpoint_contexts

from typing import Any

from parakit.config.memory import Checkpointing
from parakit.config.own_model import WHOLE_MODEL
from parakit.engine.blocks import find_blocks

# Ops whose outputs selective checkpointing keeps: what backward would otherwise recompute at
# a matmul's cost, or at a collective's. Everything else is recomputed. These are the ops as a
# dispatch mode sees them, below autograd: nn.Linear arrives as addmm (2-D) or mm (after a
# view), never as aten.linear or aten.matmul, which decompose before this level. Attention is
# listed under each fused kernel's name (CPU's flash kernel, CUDA's flash, efficient and
# cuDNN); its math fallback decomposes into bmm. torchtitan's policy also recomputes every
# second mm to save more memory; parakit keeps them all, for one rule that is easy to state.
SAVED_OPS = (
    "aten.mm", "aten.addmm", "aten.bmm", "aten.baddbmm",
    "aten._scaled_dot_product_flash_attention",
    "aten._scaled_dot_product_flash_attention_for_cpu",
    "aten._scaled_dot_product_efficient_attention",
    "aten._scaled_dot_product_cudnn_attention",
    # Tensor parallelism's all-reduce (row-wise layers) and reduce-scatter: recomputing them
    # would repeat their communication in backward.
    "_c10d_functional.all_reduce", "_c10d_functional.reduce_scatter_tensor",
)


def saved_ops() -> list[torch._ops.OpOverload]:
    """The default overload of each op in SAVED_OPS that this torch build has."""
    ops = []
    for name in SAVED_OPS:
        namespace, op = name.split(".")
        packet = getattr(getattr(torch.ops, namespace), op, None)
        if packet is not None:
            ops.append(packet.default)
    return ops


def apply_checkpointing(model: nn.Module, mode: Checkpointing, blocks: Any = None) -> list[str]:
    """Checkpoint each repeated block of ``model`` in place, as ``mode`` says. A model without
    blocks (engine/blocks.py found none) is checkpointed whole, as one unit: its activations
    are rebuilt in backward all at once, which saves memory between forward and backward but
    not at backward's peak.

    Args:
        model: the model, after tensor parallelism and before compile, FSDP or DDP.
        mode: none, full or selective.
        blocks: the run's ``blocks`` setting (None: found).

    Returns:
        The names of the modules checkpointed ([WHOLE_MODEL] for the model as one; [] for none).
    """
    if mode is Checkpointing.NONE:
        return []
    options = {}
    if mode is Checkpointing.SELECTIVE:
        # A fresh pair of contexts per forward: each holds that forward's saved outputs.
        options["context_fn"] = functools.partial(create_selective_checkpoint_contexts, saved_ops())
    units = find_blocks(model, blocks) or [(WHOLE_MODEL, model)]
    for _, unit in units:
        # An instance attribute shadows the class's forward; nn.Module.__call__ still runs the
        # hooks around it.
        unit.forward = checkpointed(unit.forward, options)
    return [name for name, _ in units]


def checkpointed(forward, options: dict):
    """``forward``, its activations recomputed in backward instead of kept."""

    @functools.wraps(forward)
    def forward_checkpointed(*args, **kwargs):
        return checkpoint(forward, *args, use_reentrant=False, **options, **kwargs)

    return forward_checkpointed
