"""Memory per rank in the cost model: parameters, gradients, optimizer state, activations and
the runtime, for the rank that holds the most. Standard library only.

- parameters, gradients: 4 bytes each (2 under bf16-pure), of what the rank holds: all of them
  (single, ddp), a 1/n shard (fsdp, plus the two blocks gathered at a time), the unsplit part
  plus 1/t of the split layers (tensor), its stages' (pipeline);
- AdamW: two moments per held parameter, in the parameters' dtype; ZeRO-1 splits them over the
  data-parallel ranks, and fsdp's ZeRO-2 holds every gathered parameter from forward to backward;
- DDP: its gradient buckets (a second copy of the gradients) and compression's residuals;
- activations: what the forward keeps for backward (measured per row on the meta device, fp32;
  half under 16-bit precisions), times the rows in flight: the rank's batch, or per pipeline
  stage the micro-batches its schedule holds at once (GPipe m, 1F1B min(m, p)); activation
  checkpointing as ``activation_bytes`` says; context parallelism divides them by its ranks
  (each keeps its chunks of every sequence, and ring attention keeps no T x T scores);
- runtime: a process's own memory (the peak RSS of one worker less its model, on CPUs).
"""

from __future__ import annotations

from parakit.config.shape import ModelShape, Part
from parakit.config.run import Hybrid, RunConfig, Schedule, Strategy
from parakit.config.levers import CompressionKind, Precision
from parakit.config.memory import Checkpointing

HALF = {Precision.FP16, Precision.BF16, Precision.BF16_PURE, Precision.FP8}  # fp8: activations stay bf16
ADAM_MOMENTS = 2


def state_bytes(precision: Precision) -> int:
    """Bytes of one parameter, gradient or optimizer moment."""
    return 2 if precision is Precision.BF16_PURE else 4


def tensor_params(parts, degree: int) -> float:
    """Parameters a tensor-parallel rank holds of ``parts``."""
    return sum(p.params - p.tensor_params * (1 - 1 / degree) for p in parts)


# Selective checkpointing keeps the matmuls' outputs of a block and recomputes the rest; the
# shape does not split a block's saved bytes by operator, so the kept share is taken as half (an
# assumption: docs/advisor.md reports how far it is from the measured bytes).
SELECTIVE_SHARE = 0.5


def activation_bytes(parts, rows: float, degree: int, precision: Precision,
                     checkpointing: Checkpointing = Checkpointing.NONE) -> float:
    """Activations kept for backward by ``parts`` over ``rows`` rows; tensor parallelism splits
    the share that its layers keep (taken as their share of the part's FLOPs). Full activation
    checkpointing keeps a block's input instead of its activations (while backward recomputes a
    block its activations exist again for a moment: a peak, not kept, so not counted here);
    selective keeps ``SELECTIVE_SHARE`` of each block's."""
    total, before = 0.0, None
    for p in parts:
        split = p.tensor_flops_per_sample / p.flops_per_sample if p.flops_per_sample else 0.0
        saved = p.saved_bytes_per_sample * (1 - split * (1 - 1 / degree))
        if p.is_block and checkpointing is Checkpointing.FULL:
            saved = before if before is not None else p.output_bytes_per_sample
        elif p.is_block and checkpointing is Checkpointing.SELECTIVE:
            saved *= SELECTIVE_SHARE
        total += saved
        before = p.output_bytes_per_sample
    return total * rows * (0.5 if precision in HALF else 1.0)


def in_flight(schedule: Schedule, microbatches: int, ranks: int) -> int:
    """Stage-chunks of activations the first pipeline rank holds at its fullest."""
    if schedule is Schedule.GPIPE:
        return microbatches
    if schedule is Schedule.ONE_F_ONE_B:
        return min(microbatches, ranks)
    # Interleaved 1F1B (two stages per rank): rank 0 runs 2 (p - 1) + p + 1 forwards first.
    return min(2 * microbatches, 3 * ranks - 1)


def memory_per_rank(config: RunConfig, shape: ModelShape, runtime_bytes: float) -> dict[str, float]:
    """Bytes per rank, by kind, for the rank that holds the most.

    Returns:
        {"params", "gradients", "optimizer", "activations", "buffers", "runtime"} in bytes.
    """
    held, act, buffers = _held_and_activations(config, shape)
    b = state_bytes(config.precision)
    grads = held
    moments = ADAM_MOMENTS * held * b
    if config.zero == 1:  # ZeRO-1: the optimizer state is split over the data-parallel ranks
        moments /= config.data_parallel_size
    if config.strategy is Strategy.DDP:
        buffers += held * 4  # DDP's buckets: a flat fp32 copy of the gradients
        if config.compression.kind in (CompressionKind.POWERSGD, CompressionKind.TOPK, CompressionKind.RANDOMK):
            buffers += held * 4  # error feedback: what was not sent yet, per gradient
    return {"params": held * b, "gradients": grads * b, "optimizer": moments,
            "activations": act, "buffers": buffers, "runtime": runtime_bytes}


def _held_and_activations(config: RunConfig, shape: ModelShape) -> tuple[float, float, float]:
    """(parameters held, activation bytes, other buffers in bytes) of the fullest rank."""
    parts, q = shape.parts, config.precision
    ac = config.activation_checkpointing
    rows = config.per_rank_batch_size
    t = config.tensor_degree
    if config.uses_pipeline:
        return _pipeline(config, shape)
    if config.strategy is Strategy.FSDP or (config.strategy is Strategy.HYBRID and config.hybrid is Hybrid.FSDP_TENSOR):
        n = config.data_parallel_size
        if config.zero == 2:  # gathered parameters stay from forward until backward: all of them at the peak
            gathered = tensor_params(parts, t) * (1 - 1 / n)
        else:
            gathered = 2 * max(tensor_params([p], t) for p in parts)  # this unit and the prefetched one
        held = tensor_params(parts, t) / n
        return held, activation_bytes(parts, rows, t, q, ac), gathered * state_bytes(q)
    if config.strategy is Strategy.EXPERT:  # each rank holds experts / workers of every mixture, whole
        experts = sum(p.expert_params for p in parts)
        rest = tensor_params(parts, 1) - experts  # replicated, its gradients averaged in one flat buffer
        return rest + experts / config.dims.expert, activation_bytes(parts, rows, 1, q, ac), rest * 4.0
    held = tensor_params(parts, t)
    if config.strategy is Strategy.CONTEXT:  # a rank keeps its 1/c of each sequence, plus the averaging buffer
        return held, activation_bytes(parts, rows, t, q, ac) / config.dims.context, held * 4
    extra = held * 4 if config.strategy is Strategy.HYBRID else 0.0  # the flat buffer gradients are averaged in
    return held, activation_bytes(parts, rows, t, q, ac), extra


def _pipeline(config: RunConfig, shape: ModelShape) -> tuple[float, float, float]:
    p = config.pipeline_ranks
    per_rank = 2 if config.schedule is Schedule.INTERLEAVED else 1
    stages = shape.stages(p * per_rank)
    rows = config.per_rank_batch_size / config.n_microbatches
    chunks = in_flight(config.schedule, config.n_microbatches, p)
    ranks = []
    for rank in range(p):
        mine: list[Part] = [part for s in stages[rank::p] for part in s]
        held = sum(part.params for part in mine)
        act = activation_bytes(mine, rows, 1, config.precision) / per_rank * chunks
        extra = held * 4 if config.strategy is Strategy.HYBRID else 0.0
        ranks.append((held * 4 * state_bytes(config.precision) + act + extra, (held, act, extra)))
    return max(ranks)[1]
