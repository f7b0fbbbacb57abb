"""Strategies: one module per way of laying a model out over ranks, each an ``apply_x(model,
mesh, ...)`` that takes a device mesh and plain arguments, never the run's whole config:

- tensor.py: tensor parallelism (the ``tensor`` step);
- fsdp.py, ddp.py: the data-parallel step, FSDP2 or a DDP replica;
- hybrid.py: the data-parallel step of ddp+tensor and pipeline+ddp (an all-reduce after backward);
- pipeline.py: a pipeline's stages and schedule; stages.py: where and how the model is cut.

engine/compose.py applies them in one fixed order and holds the dict from layout to data-parallel
step. It imports each module when a run first needs it: FSDP, DTensor and pipelining (with
dynamo) are 1.6 s of imports on a 2-core CPU, which an engine's first ddp run need not wait for.
"""

from __future__ import annotations

from parakit.engine.strategies.base import Parallel

__all__ = ["Parallel"]
