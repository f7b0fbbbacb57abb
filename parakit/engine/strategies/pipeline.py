"""Pipeline parallelism with ``torch.distributed.pipelining``: the model is cut into stages of
consecutive blocks, rank r holds stage r (and r + p, r + 2p, ... for interleaved schedules),
and each step's batch flows through as micro-batches. Activations go forward and gradients
back over point-to-point sends; the last stage computes the loss."""

from __future__ import annotations

import statistics
import time
import warnings
from typing import Any

import torch
from torch import nn
from torch.distributed.pipelining import (
    PipelineStage, Schedule1F1B, ScheduleGPipe, ScheduleInterleaved1F1B, SplitPoint, pipeline,
)

from parakit.config.run import Schedule
from parakit.engine.strategies.base import Context, Parallel
from parakit.config.layouts import STAGES_PER_RANK

SCHEDULES = {Schedule.GPIPE: ScheduleGPipe, Schedule.ONE_F_ONE_B: Schedule1F1B,
             Schedule.INTERLEAVED: ScheduleInterleaved1F1B}


def balanced_cuts(sizes: list[int], stages: int) -> list[int]:
    """Indices where stages 1.. begin, so that the largest stage's parameter count is as small
    as it can be (contiguous blocks, each stage at least one). A small dynamic programme."""
    n = len(sizes)
    prefix = [0]
    for s in sizes:
        prefix.append(prefix[-1] + s)
    inf = float("inf")
    # best[k][i]: the smallest max-stage-size putting the first i blocks into k stages
    best = [[inf] * (n + 1) for _ in range(stages + 1)]
    cut = [[0] * (n + 1) for _ in range(stages + 1)]
    best[0][0] = 0
    for k in range(1, stages + 1):
        for i in range(k, n + 1):
            for j in range(k - 1, i):
                cost = max(best[k - 1][j], prefix[i] - prefix[j])
                if cost < best[k][i]:
                    best[k][i], cut[k][i] = cost, j
    cuts, i = [], n
    for k in range(stages, 0, -1):
        i = cut[k][i]
        cuts.append(i)
    return sorted(cuts)[1:]  # the first stage begins at block 0


def split_points(model: nn.Module, ctx: Context, stages: int) -> list[str]:
    """The user's split points, or cuts that balance parameters over the model's block list."""
    if ctx.config.split:
        names = dict(model.named_modules())
        missing = [name for name in ctx.config.split if name not in names]
        if missing:
            raise ValueError(f"split names modules the model does not have: {', '.join(missing)}")
        return list(ctx.config.split)
    name, blocks = next((n, c) for n, c in model.named_children() if isinstance(c, nn.ModuleList))
    sizes = [sum(p.numel() for p in b.parameters()) for b in blocks]
    return [f"{name}.{i}" for i in balanced_cuts(sizes, stages)]


class BusyTimer:
    """Time this rank spends computing in its stages (forward and backward chunks), so the rest
    of the step is the bubble: waiting for a neighbour's activations or gradients."""

    def __init__(self, device: torch.device):
        self.sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        self.busy_s = 0.0
        self.per_step: list[float] = []

    def wrap(self, fn):
        def timed(*args, **kwargs):
            self.sync()  # note: a GPU sync per chunk, so the time is the chunk's own compute
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.sync()
                self.busy_s += time.perf_counter() - start

        return timed

    def end_step(self) -> None:
        self.per_step.append(self.busy_s)
        self.busy_s = 0.0


def build_stages(model: nn.Module, ctx: Context, pp_rank: int, pp_size: int, pp_group):
    """Trace the model, cut it, and build this rank's PipelineStages (looped placement: stage
    s on pipeline rank s % p, as interleaved schedules require)."""
    config = ctx.config
    per_rank = STAGES_PER_RANK[config.schedule]
    n_stages = pp_size * per_rank
    spec = {name: SplitPoint.BEGINNING for name in split_points(model, ctx, n_stages)}
    micro = config.per_rank_batch_size // config.n_microbatches
    sample = ctx.sample_inputs[:micro]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.export's internal deprecations
        pipe = pipeline(model, mb_args=(sample,), split_spec=spec)
    if pipe.num_stages != n_stages:
        raise ValueError(f"split points gave {pipe.num_stages} stages; {n_stages} are needed")
    indices = [pp_rank + k * pp_size for k in range(per_rank)]
    modules = [pipe.get_stage_module(i).to(ctx.device) for i in indices]
    stages = [PipelineStage(m, i, n_stages, ctx.device, group=pp_group) for m, i in zip(modules, indices)]
    return stages, modules, n_stages


def make_pipeline(model: nn.Module, ctx: Context, pp_rank: int, pp_size: int, pp_group=None,
                  data_rank: int = 0, data_size: int = 1) -> Parallel:
    config = ctx.config
    stages, modules, n_stages = build_stages(model, ctx, pp_rank, pp_size, pp_group)
    timer = BusyTimer(ctx.device)
    for stage in stages:
        stage.forward_one_chunk = timer.wrap(stage.forward_one_chunk)
        stage.backward_one_chunk = timer.wrap(stage.backward_one_chunk)
    cls = SCHEDULES[config.schedule]
    # scale_grads: gradients are divided by the micro-batch count, so the mean of micro-batch
    # losses gives the same gradients as one pass over the whole batch.
    schedule = cls(stages if cls is ScheduleInterleaved1F1B else stages[0],
                   n_microbatches=config.n_microbatches, loss_fn=ctx.loss_fn, scale_grads=True)
    first = any(s.is_first for s in stages)
    last = any(s.is_last for s in stages)

    def forward_backward(inputs, targets) -> torch.Tensor | None:
        losses: list[torch.Tensor] = []
        args = (inputs,) if first else ()
        if last:
            schedule.step(*args, target=targets, losses=losses)
        else:
            schedule.step(*args)
        timer.end_step()
        # Equal micro-batches: the mean of their losses is the loss over the whole batch.
        return torch.stack([l.detach() for l in losses]).mean() if last else None

    m, p = config.n_microbatches, n_stages
    ideal = (pp_size - 1) / (m * len(stages) + pp_size - 1)

    def stats() -> dict[str, Any]:
        return {"pipeline_busy_s": timer.per_step, "stages": [s.stage_index for s in stages],
                "bubble_ideal": ideal, "microbatches": m, "pipeline_stages": p}

    return Parallel(modules, forward_backward, data_rank=data_rank, data_size=data_size, stats=stats)


def apply_pipeline(model: nn.Module, ctx: Context) -> Parallel:
    # Every stage reads the same (whole) batch: the first uses the inputs, the last the targets.
    return make_pipeline(model, ctx, ctx.rank, ctx.world_size)


def pipeline_figures(stats: dict[str, Any], step_times: list[float], warmup: int) -> dict[str, Any]:
    """A pipeline rank's bubble: the share of each step it spent not computing (waiting for a
    neighbour), median over the measured steps, beside the schedule's ideal (p-1)/(v*m+p-1)."""
    busy = stats.get("pipeline_busy_s")
    if not busy:
        return {}
    idle = [1 - b / t for b, t in zip(busy[warmup:], step_times[warmup:]) if t > 0]
    return {
        "bubble": statistics.median(idle) if idle else None,
        "bubble_ideal": stats["bubble_ideal"],
        "stages": stats["stages"],
    }
