"""torch.compile for a run, applied as torchtitan applies it: each repeated block on its own,
after activation checkpointing and before FSDP or DDP wrap the model (the order is compose's,
engine/compose.py).

Only each block's ``forward`` is compiled, not the module, so that
- the module's hooks stay outside the graph: FSDP2 gathers a block's weights in a pre-forward
  hook and frees them after, and DDP's gradient hooks sit on the parameters, so neither is
  traced into (or broken by) the compiled code;
- parameter names do not change (no ``_orig_mod.`` prefix, where torchtitan swaps each block
  for a compiled wrapper module), so the optimizer, the replicas' digest and a saved state
  look as they do uncompiled;
- identical blocks share one compiled graph: compiling costs one block's worth, not depth's.
The ``forward`` compiled is the checkpointed one where checkpointing applies (engine/
checkpointing.py), so the recomputation is inside the graph, where the compiler plans it.
A model without a block list is compiled whole. Nothing compiles here: torch.compile is lazy,
so the first step pays (the warm-up, which RunConfig insists on).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from parakit.engine.blocks import repeated_blocks


def apply_compile(model: nn.Module, backend: str | Callable = "inductor", blocks: Any = None) -> int:
    """Compile each repeated block's forward in place (the whole model's without blocks).

    Args:
        model: the model, checkpointed as the run asks, before FSDP or DDP wrap it.
        backend: torch.compile's backend: inductor for runs; tests pass one that records
            the graphs dynamo captures.
        blocks: the run's ``blocks`` setting (None: found, engine/blocks.py).

    Returns:
        The number of modules whose forward was compiled.
    """
    units = repeated_blocks(model, blocks) or [model]
    for unit in units:
        # An instance attribute shadows the class's forward; nn.Module.__call__ still runs the
        # hooks around it. fullgraph=False: a model of your own may have code dynamo cannot
        # trace, which then runs eagerly instead of failing the run.
        unit.forward = torch.compile(unit.forward, backend=backend)
    return len(units)
