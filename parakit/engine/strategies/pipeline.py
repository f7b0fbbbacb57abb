"""Pipeline parallelism with ``torch.distributed.pipelining``: the model is cut into stages of
consecutive blocks, rank r holds stage r (and r + p, r + 2p, ... for interleaved schedules),
and each step's batch flows through as micro-batches. Activations go forward and gradients
back over point-to-point sends; the last stage computes the loss.

A pipeline is split before any other of compose's steps (engine/compose.py) and takes none of
them but pipeline+ddp's gradient average: ``pipeline`` traces the whole, plain model with
torch.export, and the stages run the traced graph, where blocks are no longer modules to wrap."""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.distributed.pipelining import (
    PipelineStage, Schedule1F1B, ScheduleGPipe, ScheduleInterleaved1F1B, SplitPoint, pipeline,
)

from parakit.config.run import Schedule
from parakit.engine.strategies.base import LossFn, Parallel
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


def split_points(model: nn.Module, split: Sequence[str] | None, stages: int) -> list[str]:
    """The user's split points, or cuts that balance parameters over the model's block list."""
    if split:
        names = dict(model.named_modules())
        missing = [name for name in split if name not in names]
        if missing:
            raise ValueError(f"split names modules the model does not have: {', '.join(missing)}")
        return list(split)
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


def build_stages(model: nn.Module, mesh, *, device: torch.device, microbatch: Any, schedule: Schedule,
                 split: Sequence[str] | None):
    """Trace the model, cut it, and build this rank's PipelineStages (looped placement: stage
    s on pipeline rank s % p, as interleaved schedules require)."""
    per_rank = STAGES_PER_RANK[schedule]
    pp_rank, pp_size = mesh.get_local_rank(), mesh.size()
    n_stages = pp_size * per_rank
    spec = {name: SplitPoint.BEGINNING for name in split_points(model, split, n_stages)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.export's internal deprecations
        pipe = pipeline(model, mb_args=(microbatch,), split_spec=spec)
    if pipe.num_stages != n_stages:
        raise ValueError(f"split points gave {pipe.num_stages} stages; {n_stages} are needed")
    indices = [pp_rank + k * pp_size for k in range(per_rank)]
    modules = [pipe.get_stage_module(i).to(device) for i in indices]
    stages = [PipelineStage(m, i, n_stages, device, group=mesh.get_group()) for m, i in zip(modules, indices)]
    return stages, modules, n_stages


def apply_pipeline(model: nn.Module, mesh, *, device: torch.device, sample_inputs: Any, loss_fn: LossFn,
                   schedule: Schedule, n_microbatches: int, split: Sequence[str] | None = None) -> Parallel:
    """Cut ``model`` into stages over ``mesh`` and schedule each step's micro-batches through them.

    Every stage reads the same (whole) batch: the first uses the inputs, the last the targets.

    Args:
        model: the built model, plain: nothing converted, wrapped or compiled.
        mesh: a 1-D device mesh: the pipeline's ranks, in stage order.
        device: this rank's device.
        sample_inputs: this rank's inputs of the first step, on ``device``: the model is
            traced with one micro-batch of them.
        loss_fn: (outputs, targets) -> the loss, computed on the last stage.
        schedule: gpipe, 1f1b or interleaved.
        n_microbatches: micro-batches per step, each an equal slice of the batch.
        split: the module names where stages begin; None for cuts that balance parameters.

    Returns:
        This rank's stages, ready for the loop.
    """
    microbatch = sample_inputs[: len(sample_inputs) // n_microbatches]
    stages, modules, n_stages = build_stages(model, mesh, device=device, microbatch=microbatch,
                                             schedule=schedule, split=split)
    timer = BusyTimer(device)
    for stage in stages:
        stage.forward_one_chunk = timer.wrap(stage.forward_one_chunk)
        stage.backward_one_chunk = timer.wrap(stage.backward_one_chunk)
    cls = SCHEDULES[schedule]
    # scale_grads: gradients are divided by the micro-batch count, so the mean of micro-batch
    # losses gives the same gradients as one pass over the whole batch.
    scheduled = cls(stages if cls is ScheduleInterleaved1F1B else stages[0],
                    n_microbatches=n_microbatches, loss_fn=loss_fn, scale_grads=True)
    first = any(s.is_first for s in stages)
    last = any(s.is_last for s in stages)

    def forward_backward(inputs, targets) -> torch.Tensor | None:
        losses: list[torch.Tensor] = []
        args = (inputs,) if first else ()
        if last:
            scheduled.step(*args, target=targets, losses=losses)
        else:
            scheduled.step(*args)
        timer.end_step()
        # Equal micro-batches: the mean of their losses is the loss over the whole batch.
        return torch.stack([l.detach() for l in losses]).mean() if last else None

    m, p, pp_size = n_microbatches, n_stages, mesh.size()
    ideal = (pp_size - 1) / (m * len(stages) + pp_size - 1)

    def stats() -> dict[str, Any]:
        return {"pipeline_busy_s": timer.per_step, "stages": [s.stage_index for s in stages],
                "bubble_ideal": ideal, "microbatches": m, "pipeline_stages": p}

    return Parallel(modules, forward_backward, stats=stats)
