"""A model's shape as the cost model sees it: per part in execution order its parameters,
FLOPs, activations kept for backward and what it hands on. Plain data, JSON in and out;
standard library only (``engine/shape.py`` measures it, the memory model and the advisor read it)."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True, kw_only=True)
class Part:
    """One piece of the model in execution order: an embedding, a block, the head."""

    name: str
    params: int
    flops_per_sample: float
    """Forward + backward FLOPs per row of the batch (FlopCounterMode on the meta device)."""
    layers: int
    """Leaf modules: the part's share of a pass's fixed cost (operator dispatch, kernel launch)."""
    saved_bytes_per_sample: float
    """Activations kept for backward per row, in fp32."""
    output_bytes_per_sample: float
    """What the part hands on per row, in fp32: what a pipeline stage boundary after it sends."""
    is_block: bool = False
    tensor_params: int = 0
    """Parameters split over ranks by tensor parallelism (its plan's layers)."""
    tensor_flops_per_sample: float = 0.0
    tensor_allreduce_bytes_per_sample: float = 0.0
    """Forward + backward all-reduce bytes per row under tensor parallelism, in fp32."""
    tensor_allreduces: int = 0
    """All-reduce calls per pass (forward and backward) under tensor parallelism."""
    expert_params: int = 0
    """Parameters in the part's mixture-of-experts experts: strategy expert spreads them over the ranks."""


@dataclass(frozen=True, kw_only=True)
class ModelShape:
    """The model as the cost model sees it."""

    name: str
    parts: tuple[Part, ...]
    matrices: tuple[tuple[int, int], ...] = ()
    """Each weight as PowerSGD sees it: (shape[0], numel / shape[0]) for tensors of 2+ dims."""
    stage_starts: Mapping[int, tuple[int, ...]] = field(default_factory=dict)
    """Per number of pipeline stages, the index in ``parts`` where each stage after the first
    begins (the engine's own balanced cuts, or the user's split points)."""
    tensor_plan: bool = False
    """Whether tensor parallelism has a plan for the model (built-in, or tp_plan given)."""

    @property
    def params(self) -> int:
        return sum(p.params for p in self.parts)

    @property
    def flops_per_sample(self) -> float:
        return sum(p.flops_per_sample for p in self.parts)

    def stages(self, count: int) -> list[tuple[Part, ...]]:
        """The parts of each of ``count`` pipeline stages, in order.

        Raises:
            KeyError: if the shape has no cuts for that many stages.
        """
        bounds = [0, *self.stage_starts[count], len(self.parts)] if count > 1 else [0, len(self.parts)]
        return [self.parts[lo:hi] for lo, hi in itertools.pairwise(bounds)]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["stage_starts"] = {str(k): list(v) for k, v in self.stage_starts.items()}
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ModelShape:
        return cls(name=d["name"], parts=tuple(Part(**p) for p in d["parts"]),
                   matrices=tuple(tuple(m) for m in d.get("matrices", ())),
                   stage_starts={int(k): tuple(v) for k, v in d.get("stage_starts", {}).items()},
                   tensor_plan=d.get("tensor_plan", False))
