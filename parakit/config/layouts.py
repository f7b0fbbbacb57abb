"""How a strategy lays a model over the ranks: pipeline schedules, 2-D meshes, and the checks
that depend on the model's shape (blocks to split, heads to shard). Standard library only, so
each mistake is found before an engine is touched."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from parakit.config.choices import Choice


class Strategy(Choice):
    SINGLE = "single"  # one engine, no process group
    DDP = "ddp"  # DistributedDataParallel: full replica per rank, gradients all-reduced
    FSDP = "fsdp"  # FSDP2 fully_shard: parameters, gradients and optimizer state sharded
    PIPELINE = "pipeline"  # consecutive blocks on consecutive ranks, micro-batches flow through
    TENSOR = "tensor"  # each weight matrix split over ranks (DTensor, column- then row-wise)
    HYBRID = "hybrid"  # a 2-D mesh: data parallel x tensor, or pipeline x data parallel
    EXPERT = "expert"  # a mixture of experts' experts spread over ranks, tokens sent by all-to-all
    CONTEXT = "context"  # each sequence split over ranks, attention computed round a ring of them


class Schedule(Choice):
    GPIPE = "gpipe"  # all forwards, then all backwards
    ONE_F_ONE_B = "1f1b"  # one forward, one backward in steady state: fewer live activations
    INTERLEAVED = "interleaved"  # 1F1B with STAGES_PER_RANK stages per rank: a smaller bubble


STAGES_PER_RANK = {Schedule.GPIPE: 1, Schedule.ONE_F_ONE_B: 1, Schedule.INTERLEAVED: 2}


class Hybrid(Choice):
    """A 2-D layout, outer dimension first; ``mesh="2x2"`` gives the size of each."""

    DDP_TENSOR = "ddp+tensor"  # replicas (gradients all-reduced) of a tensor-parallel model
    FSDP_TENSOR = "fsdp+tensor"  # FSDP over replicas of a tensor-parallel model (2-D, torchtitan)
    PIPELINE_DDP = "pipeline+ddp"  # pipeline stages, each stage replicated for data parallelism


class TensorStyle(Choice):
    COLWISE = "colwise"  # output features split: each rank computes a slice of the outputs
    ROWWISE = "rowwise"  # input features split: partial sums all-reduced


def mesh_sizes(value: Any) -> tuple[int, int] | None:
    """``"2x2"``, ``"2×2"`` or ``(2, 2)`` -> (outer, inner); None where it is not two whole
    numbers. The one reading of a mesh; parse_mesh checks it against the run."""
    if isinstance(value, str):
        parts = value.lower().replace("×", "x").split("x")
    elif isinstance(value, (tuple, list)):
        parts = list(value)
    else:
        return None
    try:
        # whole numbers only: int(2.5) would quietly make a 2.5x2 mesh a 2x2 one
        outer, inner = (int(p) if isinstance(p, str) or float(p).is_integer() else None for p in parts)
    except (TypeError, ValueError):
        return None
    return None if outer is None or inner is None else (outer, inner)


def parse_mesh(value: Any, workers: int, hybrid: Hybrid) -> tuple[int, int]:
    """``"2x2"`` or ``(2, 2)`` -> (outer, inner); None -> (workers // 2, 2)."""
    outer_name, inner_name = hybrid.value.split("+")
    if value is None:
        if workers < 4 or workers % 2:
            raise ValueError(
                f"hybrid needs an even number of workers >= 4 (got {workers}), or mesh='AxB'"
            )
        return workers // 2, 2
    sizes = mesh_sizes(value)
    if sizes is None:
        raise ValueError(f"mesh must look like 2x2 ({outer_name} x {inner_name}), got {value!r}")
    outer, inner = sizes
    if outer < 1 or inner < 1:
        raise ValueError(f"mesh sizes must be >= 1 (got {outer}x{inner})")
    if outer * inner != workers:
        raise ValueError(
            f"mesh {outer}x{inner} has {outer * inner} ranks but workers={workers}; "
            f"use workers={outer * inner} or a mesh whose product is {workers}"
        )
    return outer, inner


def built_in_blocks(model: str, options: Mapping[str, int]) -> int:
    """How many repeated blocks a built-in model has: the units a pipeline splits between."""
    if model == "mlp":
        return max(options["depth"] - 1, 1)
    if model == "cnn":
        return 3
    return options["depth"]


def check_pipeline(stages: int, blocks: int | None, split: tuple[str, ...] | None, model: str) -> None:
    if split is not None:
        if len(split) != stages - 1:
            raise ValueError(
                f"split has {len(split)} points, giving {len(split) + 1} stages, but the pipeline "
                f"has {stages}; give {stages - 1} split points"
            )
        return
    if blocks is None:
        raise ValueError(
            "pipeline needs split points for a model of your own, e.g. split=['layers.2'] "
            "(the names of the modules where new stages begin)"
        )
    if stages > blocks:
        raise ValueError(
            f"pipeline of {stages} stages but {model} has {blocks} blocks; use fewer workers or "
            f"a deeper model (model_options depth >= {stages + (1 if model == 'mlp' else 0)})"
        )


def check_microbatches(microbatches: int, per_replica_batch: int, pipeline_ranks: int, schedule: Schedule) -> None:
    if per_replica_batch % microbatches:
        raise ValueError(
            f"{microbatches} micro-batches do not divide the batch of {per_replica_batch} each "
            f"pipeline gets; use a batch_size that is a multiple of {microbatches}, or other microbatches"
        )
    if schedule is not Schedule.GPIPE and microbatches < pipeline_ranks:
        raise ValueError(
            f"schedule {schedule} needs at least as many micro-batches as pipeline ranks "
            f"({pipeline_ranks}); got microbatches={microbatches}"
        )
    if schedule is Schedule.INTERLEAVED and microbatches % pipeline_ranks:
        raise ValueError(
            f"schedule interleaved needs micro-batches in multiples of the pipeline ranks "
            f"({pipeline_ranks}); got microbatches={microbatches}"
        )


def check_tensor(model: Any, options: Mapping[str, int], degree: int, plan: Mapping[str, str] | str | None) -> None:
    if isinstance(plan, Mapping):
        for name, style in plan.items():
            TensorStyle.parse(style, f"tp_plan style of {name!r}")
        return
    if plan is not None and not isinstance(model, str):
        return  # "auto": the model's own plan, read from the model on the meta device (engine/model_check.py)
    if model == "gpt":
        for what in ("heads", "width"):
            if options[what] % degree:
                raise ValueError(
                    f"tensor degree {degree} does not divide gpt {what} ({options[what]}); "
                    f"use a {what} that is a multiple of {degree}"
                )
    elif model == "mlp":
        if options["width"] % degree:
            raise ValueError(
                f"tensor degree {degree} does not divide mlp width ({options['width']}); "
                f"use a width that is a multiple of {degree}"
            )
    else:
        name = model if isinstance(model, str) else "a model of your own"
        raise ValueError(
            f"tensor parallelism has no plan for {name}; use gpt or mlp, or pass "
            "tp_plan={'layer.name': 'colwise' | 'rowwise', ...} (or tp_plan='auto' for a transformers model)"
        )


def check_context(model: Any, options: Mapping[str, int], ranks: int, compile_: bool) -> None:
    """Context parallelism replaces the model's attention with ring attention and cuts each
    sequence into 2 chunks per rank (one early, one late, so the causal mask loads every rank alike)."""
    if model != "gpt":
        name = model if isinstance(model, str) else "a model of your own"
        raise ValueError(f"context parallelism replaces attention with ring attention, which parakit can do in "
                         f"the built-in gpt only (got {name}); use model='gpt'")
    if options.get("experts"):
        raise ValueError("context does not combine with experts yet (their balancing loss is over a rank's "
                         "tokens); use strategy expert, or a dense gpt")
    chunks = 2 * ranks
    if options["seq_len"] % chunks:
        raise ValueError(f"context over {ranks} ranks cuts each sequence into {chunks} chunks (two per rank); "
                         f"seq_len {options['seq_len']} is not a multiple of {chunks}: use e.g. "
                         f"seq_len={max(chunks, options['seq_len'] // chunks * chunks)}")
    if compile_:
        raise ValueError("compile does not combine with context yet (the ring's sends sit inside each "
                         "block's attention); drop compile")
