"""The parallel degrees of a run, in one object (torchtitan's ``ParallelDims``): how many ranks
split the batch (data), each layer (tensor) and the model's depth (pipeline), and the mesh the
strategy builds from them. RunConfig, the hybrid strategy and the advisor read sizes only here.

Standard library only: the mesh itself (torch's ``init_device_mesh``) is built on the engines
from ``mesh_names`` and ``mesh_shape``.
"""

from __future__ import annotations

from dataclasses import dataclass

from parakit.config.layouts import Hybrid, Strategy


@dataclass(frozen=True, kw_only=True)
class ParallelDims:
    """Sizes of each kind of parallelism; their product is the world size."""

    data: int = 1
    """Ranks that each take a different slice of the global batch (ddp, fsdp, a mesh's data dim)."""
    tensor: int = 1
    """Ranks that each hold a slice of every layer (tensor parallelism)."""
    pipeline: int = 1
    """Stages the model's depth is cut into (pipeline parallelism)."""
    expert: int = 1
    """Ranks a mixture's experts are spread over, borrowed from the data dimension (torchtitan's
    expert parallelism): each also reads its own slice of the batch, so it is not in ``world``."""
    context: int = 1
    """Ranks each sequence is split over (context parallelism: attention round a ring of them)."""
    mesh_names: tuple[str, ...] = ("data",)
    """The mesh's dimensions, outer first, as the strategy names them."""

    def __post_init__(self) -> None:
        for name in ("data", "tensor", "pipeline", "expert", "context"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"the {name}-parallel degree must be an integer >= 1 (got {value!r})")
        unknown = set(self.mesh_names) - {"data", "tensor", "pipeline", "context"}
        if unknown:
            raise ValueError(f"mesh dimension {sorted(unknown)[0]!r} is not data, tensor, pipeline or context")

    @classmethod
    def of(cls, strategy: Strategy, workers: int, hybrid: Hybrid | None = None,
           mesh: tuple[int, int] | None = None) -> "ParallelDims":
        """The degrees of a layout: a strategy over ``workers`` ranks, or a hybrid's 2-D mesh
        (outer x inner, as RunConfig parses it)."""
        if strategy is Strategy.HYBRID:
            outer, inner = mesh
            if hybrid is Hybrid.PIPELINE_DDP:
                return cls(pipeline=outer, data=inner, mesh_names=("pipeline", "data"))
            return cls(data=outer, tensor=inner, mesh_names=("data", "tensor"))
        if strategy in (Strategy.DDP, Strategy.FSDP):
            return cls(data=workers)
        if strategy is Strategy.EXPERT:  # the experts spread over the data dimension's ranks
            return cls(data=workers, expert=workers)
        if strategy is Strategy.TENSOR:
            return cls(tensor=workers, mesh_names=("tensor",))
        if strategy is Strategy.PIPELINE:
            return cls(pipeline=workers, mesh_names=("pipeline",))
        if strategy is Strategy.CONTEXT:  # every rank reads the whole batch, its chunks of each row
            return cls(context=workers, mesh_names=("context",))
        return cls()  # single

    @property
    def world(self) -> int:
        return self.data * self.tensor * self.pipeline * self.context

    @property
    def data_enabled(self) -> bool:
        return self.data > 1

    @property
    def tensor_enabled(self) -> bool:
        return self.tensor > 1

    @property
    def pipeline_enabled(self) -> bool:
        return self.pipeline > 1

    @property
    def mesh_shape(self) -> tuple[int, ...]:
        """Each mesh dimension's size, in ``mesh_names`` order."""
        return tuple(getattr(self, name) for name in self.mesh_names)

    def coordinates(self, rank: int) -> dict[str, int]:
        """Where ``rank`` sits on the mesh (picotron's grid: the last dimension varies fastest),
        e.g. {"data": 1, "tensor": 0} for rank 2 of a 2x2 data x tensor mesh."""
        if not 0 <= rank < self.world:
            raise ValueError(f"rank {rank} is not on a mesh of {self.world} ranks")
        out = {}
        for name, size in reversed(list(zip(self.mesh_names, self.mesh_shape))):
            out[name] = rank % size
            rank //= size
        return dict(reversed(list(out.items())))
