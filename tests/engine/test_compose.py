"""compose: every layout's steps in one fixed order (convert, tensor, checkpointing, compile,
then fsdp or ddp), each strategy applied with a mesh and plain arguments, the mesh built from
the run's ParallelDims.

All in this process, on a real gloo group of one rank. Compile uses a backend that records
the graphs dynamo captures instead of inductor's (a cold inductor compile is 30 s on 2 cores):
what is in the graph is decided before the backend sees it.
"""

from __future__ import annotations

import functools

import pytest
import torch
from torch import nn
from torch.distributed.tensor import DTensor, Shard
from torch.nn import functional as F

from parakit.config.degrees import ParallelDims
from parakit.config.levers import Sync
from parakit.config.run import Hybrid, RunConfig, Strategy
from parakit.engine import compose as composing
from parakit.engine import fp8
from parakit.engine.compiling import apply_compile
from parakit.engine.compose import Setup, build_mesh, compose
from parakit.engine.workloads import build_model

GPT_SIZE = {"width": 16, "depth": 2, "heads": 2, "seq_len": 8}
CPU = torch.device("cpu")


def sequence_loss(outputs, targets):
    return F.cross_entropy(outputs.flatten(0, -2), targets.flatten())


def tiny_gpt() -> nn.Module:
    torch.manual_seed(0)
    return build_model("gpt", GPT_SIZE)


def gpt_batch() -> torch.Tensor:
    return torch.randint(0, 60, (2, GPT_SIZE["seq_len"]), generator=torch.Generator().manual_seed(1))


def setup(**settings) -> Setup:
    config = RunConfig(model="gpt", model_options=GPT_SIZE, workers=1, **settings)
    return Setup(config=config, device=CPU, loss_fn=sequence_loss)


# -- compile after checkpointing -------------------------------------------------------------
@pytest.mark.parametrize("strategy, checkpointing", [("single", "selective"), ("fsdp", "full")])
def test_compile_comes_after_checkpointing_so_the_recomputation_is_in_the_graph(
        group_of_one, monkeypatch, strategy, checkpointing):
    graphs = []

    def recording(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    monkeypatch.setattr(composing, "apply_compile", functools.partial(apply_compile, backend=recording))
    model = tiny_gpt()
    parallel = compose(model, setup(strategy=strategy, compile=True, activation_checkpointing=checkpointing))
    x = gpt_batch()
    loss = parallel.forward_backward(x, x)
    # One graph for both identical blocks, with the checkpoint inside it. Compiled first (the
    # old order), the checkpoint ran around the compiled call and no graph held it.
    assert len(graphs) == 1
    targets = [node.target for node in graphs[0].graph.nodes]
    assert torch.ops.higher_order.tag_activation_checkpoint in targets
    assert loss.item() == pytest.approx(sequence_loss(tiny_gpt()(x), x).item(), rel=1e-5)
    assert parallel.composed == ("checkpointing", "compile") + (("fsdp",) if strategy == "fsdp" else ())


# -- the order -------------------------------------------------------------------------------
ORDERS = [
    (dict(strategy="single"), []),
    (dict(strategy="single", compile=True, activation_checkpointing="full"), ["checkpointing", "compile"]),
    (dict(strategy="fsdp", precision="fp8", compile=True, activation_checkpointing="full"),
     ["convert", "checkpointing", "compile", "fsdp"]),
    (dict(strategy="ddp", compile=True, activation_checkpointing="selective"), ["checkpointing", "compile", "ddp"]),
    (dict(strategy="tensor", compile=True, activation_checkpointing="full"), ["tensor", "checkpointing", "compile"]),
    (dict(strategy="hybrid", hybrid="fsdp+tensor", mesh="1x1", compile=True, activation_checkpointing="full"),
     ["tensor", "checkpointing", "compile", "fsdp"]),
    # one replica (a data dimension of 1) has nothing to average: no data step
    (dict(strategy="hybrid", hybrid="ddp+tensor", mesh="1x1", compile=True), ["tensor", "compile"]),
]


@pytest.mark.parametrize("settings, order", ORDERS, ids=["-".join(map(str, s.values())) for s, _ in ORDERS])
def test_compose_applies_its_steps_in_the_documented_order(group_of_one, monkeypatch, settings, order):
    called = []

    def spy(name, fn):
        return lambda *args, **kwargs: called.append(name) or fn(*args, **kwargs)

    # no GPU or torchao here: the conversion names its layers, the float8 scales are not computed
    monkeypatch.setattr(fp8, "apply_fp8", lambda model, device, **kw: fp8.fp8_layer_names(model))
    monkeypatch.setattr(fp8, "scale_precompute", lambda model: lambda: None)
    for name, attribute in [("convert", "_convert"), ("tensor", "_tensor"),
                            ("checkpointing", "apply_checkpointing"), ("compile", "apply_compile")]:
        monkeypatch.setattr(composing, attribute, spy(name, getattr(composing, attribute)))
    for layout, (name, step) in composing.DATA_PARALLEL.items():
        monkeypatch.setitem(composing.DATA_PARALLEL, layout, (name, spy(name, step)))
    parallel = compose(tiny_gpt(), setup(**settings))
    assert called == order
    assert list(parallel.composed) == order
    assert (parallel.data_rank, parallel.data_size) == (0, 1)


def test_every_layout_with_a_data_dimension_has_a_data_parallel_step():
    layouts = [s for s in Strategy if s is not Strategy.HYBRID] + list(Hybrid)
    with_data = {layout for layout in layouts if layout in composing.DATA_PARALLEL}
    assert with_data == {Strategy.DDP, Strategy.FSDP, Hybrid.FSDP_TENSOR, Hybrid.DDP_TENSOR, Hybrid.PIPELINE_DDP,
                         Strategy.EXPERT, Strategy.CONTEXT}  # context: its replicas' gradients averaged


# -- a mesh and plain arguments --------------------------------------------------------------
def test_the_mesh_is_built_from_the_parallel_dims(group_of_one):
    dims = ParallelDims(data=1, tensor=1, mesh_names=("data", "tensor"))
    mesh = build_mesh(dims, CPU, rank=0)
    assert mesh.mesh_dim_names == dims.mesh_names and tuple(mesh.shape) == dims.mesh_shape
    with pytest.raises(RuntimeError, match=r"the layout needs 2 ranks \(2 data\); the process group has 1"):
        build_mesh(ParallelDims(data=2), CPU, rank=0)


def test_tensor_and_fsdp_take_a_mesh_and_plain_arguments(group_of_one):
    from parakit.engine.strategies.fsdp import apply_fsdp
    from parakit.engine.strategies.tensor import apply_tensor

    mesh = build_mesh(ParallelDims(data=1, tensor=1, mesh_names=("data", "tensor")), CPU, rank=0)
    model = apply_tensor(tiny_gpt(), mesh["tensor"], {"blocks.0.attn.q": "colwise", "blocks.0.attn.proj": "rowwise"})
    attn = model.blocks[0].attn
    assert attn.q.weight.placements == (Shard(0),) and attn.proj.weight.placements == (Shard(1),)
    assert not isinstance(attn.k.weight, DTensor)  # outside the plan: left whole
    parallel = apply_fsdp(model, mesh["data"], loss_fn=sequence_loss, zero=2)
    assert all(isinstance(p, DTensor) for p in parallel.parameters())
    x = gpt_batch()
    assert parallel.forward_backward(x, x).item() == pytest.approx(sequence_loss(tiny_gpt()(x), x).item(), rel=1e-5)


def test_ddp_takes_a_mesh_and_its_sync_settings_not_the_run_config(group_of_one):
    from parakit.engine.strategies.ddp import GradientSync, apply_ddp

    mesh = build_mesh(ParallelDims(data=1), CPU, rank=0)
    parallel = apply_ddp(tiny_gpt(), mesh, device=CPU, loss_fn=sequence_loss,
                         sync=GradientSync(sync=Sync.parse("local-sgd:2"), steps=3))
    x = gpt_batch()
    parallel.forward_backward(x, x)
    sent = []
    for _ in range(2):
        parallel.after_step()
        sent.append(parallel.wire.take_step().comm_bytes)
    # local SGD every 2 steps: the parameters are averaged (and counted) after the second only
    assert sent == [0, sum(p.numel() * p.element_size() for p in parallel.parameters())]
    assert parallel.replicated is False  # 3 steps end between two averages
    assert apply_ddp(tiny_gpt(), mesh, device=CPU, loss_fn=sequence_loss).replicated is True


def test_sync_batchnorm_converts_batchnorm_over_the_data_dimension_first(group_of_one):
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 2))
    # fsdp: DDP refuses SyncBatchNorm on CPU modules at once (preflight refuses the setting there)
    config = RunConfig(model=lambda: model, data=lambda s, n: None, strategy="fsdp", workers=1, sync_batchnorm=True)
    parallel = compose(model, Setup(config=config, device=CPU, loss_fn=F.cross_entropy))
    assert parallel.composed == ("sync_batchnorm", "fsdp")
    norm = parallel.modules[0][1]
    # torch's SyncBatchNorm, its statistics all-reduced over the data-parallel ranks (on GPUs)
    assert isinstance(norm, nn.SyncBatchNorm) and norm.process_group is not None
