"""Lay a built model out over the ranks: every layout's steps, in one fixed order.

``compose`` applies to the model, built alike on every rank, torchtitan's order (its model
converters, then ``parallelize_llama``):

1. convert: precision fp8 swaps the qualifying nn.Linear for Float8Linear (engine/fp8.py);
   sync_batchnorm swaps BatchNorm for SyncBatchNorm over the mesh's data dimension. First,
   so every later step wraps the modules that will run.
2. tensor: the tensor-parallel plan over the mesh's tensor dimension (strategies/tensor.py).
   The plan names modules of the model as built, and FSDP shards the DTensors it leaves.
   Checkpointing, compile and fsdp take the model's blocks where engine/blocks.py finds them.
3. checkpointing: each block's forward recomputed in backward (engine/checkpointing.py).
   After the plan, so the recomputation replays the tensor-parallel layers with their hooks.
4. compile: each block's forward compiled, checkpoint included (engine/compiling.py). The
   recomputation is then in the graph, where the compiler plans it; compiled before it, the
   checkpoint would rerun one opaque compiled call, and selective checkpointing's policy
   would never see the ops it picks.
5. data: FSDP over the mesh's data dimension (strategies/fsdp.py), a DDP replica
   (strategies/ddp.py), the gradients' all-reduce of ddp+tensor and pipeline+ddp
   (strategies/hybrid.py), or expert's experts spread over the data ranks with the rest's
   gradients all-reduced (strategies/expert.py), or context's ring attention with the
   gradients all-reduced after backward (strategies/context.py). Last and outermost, so its hooks stay outside the compiled blocks.

A layout takes the steps that apply to it: tensor where its mesh has a tensor dimension, data
where ``DATA_PARALLEL`` has a step for it; convert, checkpointing and compile where the run
asks for them.

Where parakit departs from torchtitan, and why:
- A pipeline is split before anything else and takes none of steps 1-4 (RunConfig refuses
  them with it): torch.distributed.pipelining traces the whole model with torch.export, and
  its stages run the traced graph, where blocks are no longer modules to convert, wrap or
  compile. torchtitan splits first too, but by hand, into modules it then parallelises; parakit
  does so only where export cannot capture the model (strategies/stages.py).
- Compile compiles each block's ``forward`` in place, where torchtitan swaps each block for
  a compiled wrapper module: parameter names keep no ``_orig_mod.`` prefix.

The device mesh is built once, here, from the run's ParallelDims (config/degrees.py): its
sizes, and the slice of each batch this rank reads, come from there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from parakit.config.degrees import ParallelDims
from parakit.config.levers import Precision
from parakit.config.memory import Checkpointing
from parakit.config.run import Hybrid, RunConfig, Strategy
from parakit.config.sync import outer_settings
from parakit.engine.checkpointing import apply_checkpointing
from parakit.engine.compiling import apply_compile
from parakit.engine.experts import attach_experts, log_steps
from parakit.engine.precision import fsdp_mixed_precision
from parakit.engine.strategies.base import LossFn, Parallel, plain_forward_backward, unscaled
from parakit.engine.workloads.moe import moe_layers
from parakit.engine.straggler import apply_straggler

Layout = Strategy | Hybrid
"""A strategy, or for strategy hybrid the hybrid layout."""


@dataclass(frozen=True, kw_only=True)
class Setup:
    """What ``compose`` is given besides the model: the run's settings, read here and passed
    on to each step as plain arguments, and this rank's place, device and loss."""

    config: RunConfig
    device: torch.device
    rank: int = 0
    """This rank in the process group (0 for single, which has none)."""
    loss_fn: LossFn
    scale_loss: Callable[[torch.Tensor], torch.Tensor] = unscaled
    """What backward starts from: fp16's GradScaler.scale; the loss itself otherwise."""
    sample_inputs: Any = None
    """This rank's inputs of the first step, on its device: a pipeline traces the model with them."""


def compose(model: nn.Module, setup: Setup) -> Parallel:
    """Lay ``model`` out over the ranks in the fixed order: convert, tensor, checkpointing,
    compile, then the data-parallel step (fsdp or ddp), each where it applies; a pipeline is
    split first and takes only the data-parallel step.

    Args:
        model: the built model, the same on every rank, on this rank's device.
        setup: the run, and this rank's place in it.

    Returns:
        What this rank trains; its ``composed`` names the steps applied, in order.
    """
    config, dims = setup.config, setup.config.dims
    layout = layout_of(config)
    mesh = None if layout is Strategy.SINGLE else build_mesh(dims, setup.device, setup.rank)
    # A mixture of experts: its balancing loss in the loss, its routing counted over the data ranks
    data_group = mesh["data"].get_group() if dims.data_enabled and moe_layers(model) else None
    setup, expert_log = attach_experts(model, setup, data_group)
    steps, fp8_layers = [], None
    if "pipeline" in dims.mesh_names:  # before anything: torch.export traces the plain model
        parallel = _pipeline(model, mesh, setup)
        steps.append("pipeline")
    else:
        if config.precision is Precision.FP8:
            fp8_layers = _convert(model, setup)
            steps.append("convert")
        if config.sync_batchnorm:  # a conversion too: every later step wraps the modules that will run
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model, mesh["data"].get_group())
            steps.append("sync_batchnorm")
        if "tensor" in dims.mesh_names:
            model = _tensor(model, mesh, config)
            steps.append("tensor")
        checkpointed = None
        if config.activation_checkpointing is not Checkpointing.NONE:
            checkpointed = apply_checkpointing(model, config.activation_checkpointing, config.blocks)
            steps.append("checkpointing")
        if config.compile:
            apply_compile(model, blocks=config.blocks)  # lazy: the first (warm-up) step compiles, inside its timing
            steps.append("compile")
        parallel = Parallel([model], plain_forward_backward(model, setup.loss_fn, setup.scale_loss),
                            replicated=layout is Strategy.SINGLE, checkpointed_units=checkpointed)
    name, apply = DATA_PARALLEL.get(layout, (None, None))
    # A hybrid's data dimension of 1 has one replica and nothing to average: no flat copy of
    # every gradient each step for an all-reduce over one rank.
    if apply is not None and (dims.data_enabled or layout not in AVERAGED):
        checkpointed = parallel.checkpointed_units
        parallel = apply(parallel, mesh, setup)
        parallel.checkpointed_units = checkpointed
        steps.append(name)
    # The slice of each global batch this rank reads: its place on the mesh's data dimension.
    parallel.data_rank, parallel.data_size = dims.coordinates(setup.rank).get("data", 0), dims.data
    parallel.fp8_layers, parallel.composed = fp8_layers, tuple(steps)
    if apply_straggler(parallel, config.straggler, setup.rank, setup.device):  # last: a lesson's lever
        parallel.composed += ("straggler",)
    if mesh is not None:  # where this rank sat, as the mesh itself says: reported with the rank
        place, stats = dict(zip(mesh.mesh_dim_names, map(int, mesh.get_coordinate()))), parallel.stats
        parallel.stats = lambda: {**stats(), "mesh_place": place}
    log_steps(parallel, expert_log)
    return parallel


def layout_of(config: RunConfig) -> Layout:
    return config.hybrid if config.strategy is Strategy.HYBRID else config.strategy


def build_mesh(dims: ParallelDims, device: torch.device, rank: int):
    """The run's device mesh, its dimensions' names and sizes from ``dims``: the one place
    parakit lays ranks out on a mesh. A 1-D mesh over every rank is the process group itself;
    a 2-D one makes a group per row and per column.

    Raises:
        RuntimeError: the process group is not the size the layout needs.
    """
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    if dist.get_world_size() != dims.world:
        shape = " x ".join(f"{size} {name}" for name, size in zip(dims.mesh_names, dims.mesh_shape))
        raise RuntimeError(f"the layout needs {dims.world} ranks ({shape}); the process group has "
                           f"{dist.get_world_size()}")
    mesh = init_device_mesh(device.type, dims.mesh_shape, mesh_dim_names=dims.mesh_names)
    # ParallelDims places ranks as init_device_mesh does (the last dimension fastest), so the
    # rows a rank reads (compose: coordinates) are the ones its data-parallel peers expect.
    assert tuple(mesh.get_coordinate()) == tuple(dims.coordinates(rank).values()), (mesh, rank)
    return mesh


# -- each step as the run asks for it: the run's settings read once, passed on as plain values
def _convert(model: nn.Module, setup: Setup) -> list[str]:
    from parakit.engine.fp8 import apply_fp8  # fp8 runs only: it is where torchao is imported

    return apply_fp8(model, setup.device, fsdp_float8_all_gather=float8_all_gather(setup.config))


def float8_all_gather(config: RunConfig) -> bool:
    """Whether FSDP all-gathers fp8's weights in float8 (half of bf16's bytes): wherever it
    shards them. torchtitan does only over more than one rank; parakit does on one too, so the
    one-GPU fp8 test (tests/test_gpu_fp8.py) runs the float8 gather's code."""
    step = DATA_PARALLEL.get(layout_of(config))
    return config.precision is Precision.FP8 and step is not None and step[0] == "fsdp"


def _tensor(model: nn.Module, mesh, config: RunConfig) -> nn.Module:
    from parakit.engine.strategies.tensor import apply_tensor, plan_for  # DTensor: tensor runs only

    return apply_tensor(model, mesh["tensor"], plan_for(model, config.tp_plan, config.model))


def _pipeline(model: nn.Module, mesh, setup: Setup) -> Parallel:
    from parakit.engine.strategies.pipeline import apply_pipeline  # pipelining and dynamo: pipelines only

    c = setup.config
    return apply_pipeline(model, mesh["pipeline"], device=setup.device, sample_inputs=setup.sample_inputs,
                          loss_fn=setup.loss_fn, schedule=c.schedule, n_microbatches=c.n_microbatches, split=c.split,
                          blocks=c.blocks)


def _ddp(parallel: Parallel, mesh, setup: Setup) -> Parallel:
    from parakit.engine.strategies.ddp import GradientSync, apply_ddp

    c = setup.config
    outer_lr, outer_momentum = outer_settings(c)
    sync = GradientSync(sync=c.sync, compression=c.compression, error_feedback=c.error_feedback, seed=c.seed,
                        steps=c.steps, outer_lr=outer_lr, outer_momentum=outer_momentum)
    return apply_ddp(parallel.modules[0], mesh["data"], device=setup.device, loss_fn=setup.loss_fn,
                     scale_loss=setup.scale_loss, bucket_mb=c.bucket_mb, sync=sync)


def _fsdp(parallel: Parallel, mesh, setup: Setup) -> Parallel:
    from parakit.engine.strategies.fsdp import apply_fsdp  # FSDP2: fsdp runs only

    c = setup.config
    # Precision as FSDP does it: parameters gathered in the compute dtype, gradients reduced in
    # fp32 or in the dtype compression asks for.
    return apply_fsdp(parallel.modules[0], mesh["data"], loss_fn=setup.loss_fn, scale_loss=setup.scale_loss,
                      mp_policy=fsdp_mixed_precision(c.precision, c.compression), zero=c.zero,
                      float8_all_gather=float8_all_gather(c), blocks=c.blocks)


def _expert(parallel: Parallel, mesh, setup: Setup) -> Parallel:
    from parakit.engine.strategies.expert import apply_expert

    return apply_expert(parallel, mesh["data"])


def _context(parallel: Parallel, mesh, setup: Setup) -> Parallel:
    from parakit.engine.strategies.context import apply_context  # the ring: context runs only

    return apply_context(parallel.modules[0], mesh["context"], device=setup.device, loss_fn=setup.loss_fn,
                         scale_loss=setup.scale_loss)


def _average(parallel: Parallel, mesh, setup: Setup) -> Parallel:
    from parakit.engine.strategies.hybrid import apply_gradient_average

    return apply_gradient_average(parallel, mesh["data"])


# Layout -> (its name in ``composed``, the data-parallel step). single, tensor and pipeline have
# none. ddp+tensor's and pipeline+ddp's replicas average as DDP does, without DDP's wrapper.
AVERAGED = (Hybrid.DDP_TENSOR, Hybrid.PIPELINE_DDP)  # the layouts whose data step is _average
DATA_PARALLEL: dict[Layout, tuple[str, Callable[[Parallel, Any, Setup], Parallel]]] = {
    Strategy.DDP: ("ddp", _ddp),
    Strategy.FSDP: ("fsdp", _fsdp),
    Hybrid.FSDP_TENSOR: ("fsdp", _fsdp),
    Hybrid.DDP_TENSOR: ("ddp", _average),
    Hybrid.PIPELINE_DDP: ("ddp", _average),
    Strategy.EXPERT: ("expert", _expert),
    # context: ring attention inside, and the replicas' gradients averaged after backward as ddp+tensor's are
    Strategy.CONTEXT: ("context", _context),
}
