"""Pipeline parallelism with ``torch.distributed.pipelining``: the model is cut into stages of
consecutive blocks, rank r holds stage r (and r + p, r + 2p, ... for interleaved schedules),
and each step's batch flows through as micro-batches. Activations go forward and gradients
back over point-to-point sends; the last stage computes the loss.

A pipeline is split before any other of compose's steps (engine/compose.py) and takes none of
them but pipeline+ddp's gradient average: ``pipeline`` traces the whole, plain model with
torch.export, and the stages run the traced graph, where blocks are no longer modules to wrap.
Where export cannot capture the model, an nn.Sequential is cut by module instead (stages.py)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe, ScheduleInterleaved1F1B
from torch.profiler import record_function

from parakit.config.run import Schedule
from parakit.engine.strategies.base import LossFn, Parallel
from parakit.engine.strategies.stages import (
    as_model_returns, cache_off, cannot_cut, module_stages, output_spec, split_points, traced_stages,
    why_not_by_module,
)
from parakit.config.layouts import STAGES_PER_RANK

SCHEDULES = {Schedule.GPIPE: ScheduleGPipe, Schedule.ONE_F_ONE_B: Schedule1F1B,
             Schedule.INTERLEAVED: ScheduleInterleaved1F1B}


class BusyTimer:
    """Time this rank spends computing in its stages (forward and backward chunks), so the rest
    of the step is the bubble: waiting for a neighbour's activations or gradients."""

    def __init__(self, device: torch.device):
        self.sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        self.busy_s = 0.0
        self.per_step: list[float] = []

    def wrap(self, fn, action: str):
        """``fn`` (a stage's forward_one_chunk or backward_one_chunk, whose first argument is
        the micro-batch) timed, and named for the profiler as torch names the action ("0F1":
        stage 0, forward, micro-batch 1), so the timeline draws each micro-batch's span."""
        def timed(*args, **kwargs):
            self.sync()  # note: a GPU sync per chunk, so the time is the chunk's own compute
            start = time.perf_counter()
            try:
                with record_function(f"parakit.pp:{action}{args[0]}"):
                    return fn(*args, **kwargs)
            finally:
                self.sync()
                self.busy_s += time.perf_counter() - start

        return timed

    def end_step(self) -> None:
        self.per_step.append(self.busy_s)
        self.busy_s = 0.0


def build_stages(model: nn.Module, mesh, *, device: torch.device, microbatch: Any, schedule: Schedule,
                 split: Sequence[str] | None, blocks: Any = None):
    """Cut the model (traced, else by module: strategies/stages.py) and build this rank's
    PipelineStages (looped placement: stage s on pipeline rank s % p, as interleaved schedules
    require).

    Raises:
        ValueError: the model can be cut neither way, in one line saying why and what to do.
    """
    per_rank = STAGES_PER_RANK[schedule]
    pp_rank, pp_size = mesh.get_local_rank(), mesh.size()
    n_stages = pp_size * per_rank
    points = split_points(model, split, n_stages, blocks)
    indices = [pp_rank + k * pp_size for k in range(per_rank)]
    cache_off(model)  # apply_pipeline did; again for a caller of this function alone
    try:
        every = traced_stages(model, microbatch, points)
        modules = [every[i] for i in indices]
    except RuntimeError as e:
        why = why_not_by_module(model, points)
        if why is not None:
            raise ValueError(cannot_cut(model, e, why)) from e
        modules = module_stages(model, points, indices)
    modules = [m.to(device) for m in modules]
    stages = [PipelineStage(m, i, n_stages, device, group=mesh.get_group()) for m, i in zip(modules, indices)]
    return stages, modules, n_stages


def apply_pipeline(model: nn.Module, mesh, *, device: torch.device, sample_inputs: Any, loss_fn: LossFn,
                   schedule: Schedule, n_microbatches: int, split: Sequence[str] | None = None,
                   blocks: Any = None) -> Parallel:
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
        blocks: the run's ``blocks`` setting, for those cuts (None: found, engine/blocks.py).

    Returns:
        This rank's stages, ready for the loop.
    """
    microbatch = sample_inputs[: len(sample_inputs) // n_microbatches]
    cache_off(model)
    spec = output_spec(model, microbatch)  # before the cut: the whole model's output, as the loss expects it
    stages, modules, n_stages = build_stages(model, mesh, device=device, microbatch=microbatch,
                                             schedule=schedule, split=split, blocks=blocks)
    timer = BusyTimer(device)
    for stage in stages:
        stage.forward_one_chunk = timer.wrap(stage.forward_one_chunk, f"{stage.stage_index}F")
        stage.backward_one_chunk = timer.wrap(stage.backward_one_chunk, f"{stage.stage_index}B")
    cls = SCHEDULES[schedule]
    # scale_grads: gradients are divided by the micro-batch count, so the mean of micro-batch
    # losses gives the same gradients as one pass over the whole batch.
    scheduled = cls(stages if cls is ScheduleInterleaved1F1B else stages[0], n_microbatches=n_microbatches,
                    loss_fn=lambda outputs, targets: loss_fn(as_model_returns(outputs, spec), targets),
                    scale_grads=True)
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
                "bubble_ideal": ideal, "microbatches": m, "pipeline_stages": p,
                "planned_order": planned_order(scheduled, schedule, mesh.get_local_rank(), stages[0].stage_index, p, m)}

    return Parallel(modules, forward_backward, stats=stats)


def planned_order(scheduled, schedule: Schedule, pp_rank: int, stage: int, stages: int, m: int) -> list[str]:
    """This rank's forward and backward actions in the order its schedule runs them ("0F1": stage
    0, forward, micro-batch 1). A multi-stage schedule's is torch's own ``pipeline_order`` (what
    torch's schedule visualiser draws); a single-stage schedule's is built here as its
    ``_step_microbatches`` runs it, since torch 2.13's 1F1B ``pipeline_order`` numbers the last
    rank's micro-batches from 1."""
    if schedule is Schedule.GPIPE:
        return [f"{stage}F{i}" for i in range(m)] + [f"{stage}B{i}" for i in range(m)]
    if schedule is Schedule.ONE_F_ONE_B:
        warmup = min(m, stages - stage)
        order, forward = [f"{stage}F{i}" for i in range(warmup)], warmup
        for backward in range(m):  # then one backward, one forward, while forwards remain
            order.append(f"{stage}B{backward}")
            if forward < m:
                order.append(f"{stage}F{forward}")
                forward += 1
        return order
    actions = (scheduled.pipeline_order or {}).get(pp_rank, [])
    return [str(a) for a in actions if a is not None and a.computation_type.value in ("F", "B", "I", "W")]
