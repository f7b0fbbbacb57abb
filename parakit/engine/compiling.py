"""torch.compile for a run, applied as torchtitan applies it: each repeated block on its own,
before the strategy wraps the model.

Only each block's ``forward`` is compiled, not the module, so that
- the module's hooks stay outside the graph: FSDP2 gathers a block's weights in a pre-forward
  hook and frees them after, and DDP's gradient hooks sit on the parameters, so neither is
  traced into (or broken by) the compiled code;
- parameter names do not change (no ``_orig_mod.`` prefix), so the optimizer, the replicas'
  digest and a saved state look as they do uncompiled;
- identical blocks share one compiled graph: compiling costs one block's worth, not depth's.
A model without a block list is compiled whole. Nothing compiles here: torch.compile is lazy,
so the first step pays (the warm-up, which RunConfig insists on).
"""

from __future__ import annotations

import torch
from torch import nn

from parakit.engine.strategies.base import repeated_blocks


def apply_compile(model: nn.Module) -> int:
    """Compile each repeated block's forward in place (the whole model's without blocks).

    Returns:
        The number of modules whose forward was compiled.
    """
    units = repeated_blocks(model) or [model]
    for unit in units:
        # An instance attribute shadows the class's forward; nn.Module.__call__ still runs the
        # hooks around it. fullgraph=False: a model of your own may have code dynamo cannot
        # trace, which then runs eagerly instead of failing the run.
        unit.forward = torch.compile(unit.forward)
    return len(units)
