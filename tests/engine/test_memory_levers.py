"""The memory levers in the engine: activation checkpointing (none, full, selective) and ZeRO
stages 1-3 train the same model to the same losses as the run without them, and do what they
say they do:

- full and selective checkpointing run each block's forward again in backward, in every
  strategy that takes them, and keep fewer bytes between forward and backward than none
  (full fewer still);
- zero=1 halves each rank's optimizer state under ddp on 2 ranks;
- zero=2 keeps a block's gathered weights from forward to backward, zero=3 frees them.

How each strategy applies the levers is checked in this process, on a real gloo group of one
rank (milliseconds); the losses on the shared 2-engine session, with a small gpt and mlp and
3 steps a run (about 0.1-0.6 s each). Runs of 2 ranks differ from single only in the order
sums are taken (about 1e-7 relative here).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.profiler import ProfilerActivity, profile

from parakit.config.memory import Checkpointing
from parakit.config.run import RunConfig
from parakit.engine.checkpointing import apply_checkpointing
from parakit.engine.compose import Setup, compose
from parakit.engine.workloads import build_model

GPT_SIZE = {"width": 32, "depth": 2, "heads": 2, "seq_len": 16}
MLP_SIZE = {"width": 32, "depth": 4, "in_features": 16, "classes": 4}
SHORT = dict(steps=3, warmup_steps=1, batch_size=8, seed=5, profile_every=0)
REL = 1e-5


def sequence_loss(outputs, targets):
    return F.cross_entropy(outputs.flatten(0, -2), targets.flatten())


# -- in this process: how each strategy applies the levers ----------------------------------
def laid_out(model: nn.Module, **settings):
    config = RunConfig(model="gpt", model_options=GPT_SIZE, workers=1, **settings)
    return compose(model, Setup(config=config, device=torch.device("cpu"), loss_fn=sequence_loss))


def tiny_gpt() -> nn.Module:
    torch.manual_seed(0)
    return build_model("gpt", GPT_SIZE)


def gpt_batch(rows: int = 2) -> torch.Tensor:
    return torch.randint(0, 60, (rows, GPT_SIZE["seq_len"]), generator=torch.Generator().manual_seed(1))


LAYOUTS = [
    dict(strategy="single"),
    dict(strategy="ddp"),
    dict(strategy="fsdp"),
    dict(strategy="tensor"),
    dict(strategy="hybrid", hybrid="fsdp+tensor", mesh="1x1"),
    dict(strategy="hybrid", hybrid="ddp+tensor", mesh="1x1"),
]
# Times a block's first layer runs in one forward and backward. Recomputation runs the block's
# forward again, inside it (the block's own hooks run once; its layers' hooks may not all run
# again: recomputation stops once it has what backward needs).
BLOCK_RUNS = {"none": 1, "full": 2, "selective": 2}


@pytest.mark.parametrize("checkpointing", BLOCK_RUNS)
@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda d: "-".join(d.values()))
def test_every_strategy_recomputes_its_blocks_when_asked(group_of_one, layout, checkpointing):
    model = tiny_gpt()
    parallel = laid_out(model, activation_checkpointing=checkpointing, **layout)
    starts = []
    model.blocks[0].ln1.register_forward_pre_hook(lambda *_: starts.append(1))
    x = gpt_batch()
    loss = parallel.forward_backward(x, x)
    assert len(starts) == BLOCK_RUNS[checkpointing]
    assert loss.item() == pytest.approx(sequence_loss(tiny_gpt()(x), x).item(), rel=REL)
    # Checkpointing wraps no module, so it renames nothing: tensor parallel plans and saved states hold.
    assert [n for n, _ in model.named_parameters()] == [n for n, _ in tiny_gpt().named_parameters()]


class NoBlocks(nn.Module):
    """A user's model without a list of blocks: it is checkpointed whole, as one unit."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.inp, self.act, self.out = nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 3)

    def forward(self, x):
        return self.out(self.act(self.inp(x)))


@pytest.mark.parametrize("strategy", ["single", "ddp", "fsdp"])
def test_a_model_without_blocks_is_checkpointed_whole(group_of_one, strategy):
    x, y = torch.randn(4, 8, generator=torch.Generator().manual_seed(2)), torch.tensor([0, 1, 2, 1])
    losses, starts = {}, {}
    for mode in ("none", "full"):
        model = NoBlocks()
        config = RunConfig(model=NoBlocks, data=lambda step, n: (x, y), strategy=strategy, workers=1,
                           activation_checkpointing=mode)
        parallel = compose(model, Setup(config=config, device=torch.device("cpu"), loss_fn=F.cross_entropy))
        starts[mode] = []
        model.act.register_forward_pre_hook(lambda *_, m=mode: starts[m].append(1))
        losses[mode] = parallel.forward_backward(x, y).item()
        grad = model.inp.weight.grad
        assert grad is not None and grad.abs().sum() > 0
    assert losses["full"] == pytest.approx(losses["none"], rel=REL)
    assert (len(starts["none"]), len(starts["full"])) == (1, 2)


def bytes_held_after_forward(mode: Checkpointing) -> int:
    """Bytes allocated during one forward and still held when it returns: what the autograd
    graph keeps for backward (plus the small output). The profiler's memory events count the
    CPU allocator's allocations and frees, op by op."""
    model = build_model("gpt", {"width": 64, "depth": 2, "heads": 2, "seq_len": 32})
    apply_checkpointing(model, mode)
    x = torch.randint(0, 60, (8, 32), generator=torch.Generator().manual_seed(1))
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        out = model(x)
    held = sum(e.self_cpu_memory_usage for e in prof.events())
    del out
    return held


def test_selective_keeps_fewer_bytes_than_none_and_full_fewer_still():
    held = {mode.value: bytes_held_after_forward(mode) for mode in Checkpointing}
    # Measured: none 2.31 MB, selective 1.65 MB (the matmuls' and attention's outputs), full
    # 0.34 MB (each block's input, the embeddings, the head's activations and the output).
    assert held["selective"] < 0.9 * held["none"], held
    assert held["full"] < 0.5 * held["selective"], held


def test_zero_2_keeps_the_gathered_weights_until_backward_and_zero_3_frees_them(group_of_one):
    registered = {}
    for zero in (None, 2, 3):
        model = tiny_gpt()
        parallel = laid_out(model, strategy="fsdp", zero=zero)
        after_forward = []
        model.register_forward_hook(lambda *_: after_forward.append(type(model.blocks[0].attn.q.weight)))
        x = gpt_batch()
        parallel.forward_backward(x, x)
        registered[zero] = (after_forward[0].__name__, type(model.blocks[0].attn.q.weight).__name__)
    # Sharded: a DTensor shard; gathered: the whole weight as a plain Parameter.
    assert registered == {None: ("DTensor", "DTensor"), 2: ("Parameter", "DTensor"), 3: ("DTensor", "DTensor")}


def test_zero_1_refuses_local_sgd():
    with pytest.raises(ValueError, match="use one or the other"):
        RunConfig(strategy="ddp", workers=2, zero=1, sync="local-sgd:4")


# -- on the engines: the same losses ---------------------------------------------------------
def run_ok(session, **settings):
    run = session.run(**SHORT, **settings)
    assert run.ok, run.error
    assert len(run.steps) == SHORT["steps"]
    return run


def mismatches(run, reference):
    return [(s.step, s.loss, t.loss) for s, t in zip(run.steps, reference.steps)
            if abs(s.loss - t.loss) > REL * abs(t.loss)]


MODELS = {"gpt": dict(model="gpt", model_options=GPT_SIZE), "mlp": dict(model="mlp", model_options=MLP_SIZE)}
TWO_RANKS = [
    dict(strategy="single"),
    dict(strategy="ddp", workers=2),
    dict(strategy="fsdp", workers=2),
    dict(strategy="tensor", workers=2),
    dict(strategy="hybrid", workers=2, hybrid="fsdp+tensor", mesh="1x2"),
    dict(strategy="hybrid", workers=2, hybrid="ddp+tensor", mesh="1x2"),
]


@pytest.fixture(scope="module")
def single_runs(session):
    return {name: run_ok(session, strategy="single", **model) for name, model in MODELS.items()}


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("layout", TWO_RANKS, ids=lambda d: "-".join(str(v) for v in d.values()))
def test_checkpointing_trains_to_the_same_losses(session, single_runs, model, layout):
    for mode in ("full", "selective"):
        run = run_ok(session, activation_checkpointing=mode, **MODELS[model], **layout)
        assert run.config["activation_checkpointing"] == mode
        assert mismatches(run, single_runs[model]) == [], mode


def test_zero_1_halves_each_ranks_optimizer_state_under_ddp(session, single_runs):
    ddp = run_ok(session, strategy="ddp", workers=2, **MODELS["gpt"])
    zero = run_ok(session, strategy="ddp", workers=2, zero=1, **MODELS["gpt"])
    assert mismatches(zero, ddp) == [] and mismatches(zero, single_runs["gpt"]) == []
    full = [r.optimizer_bytes for r in ddp.ranks]
    shards = [r.optimizer_bytes for r in zero.ranks]
    assert full[0] == full[1]
    # Every parameter's state on exactly one rank; whole tensors, so halves only nearly.
    assert sum(shards) == full[0], (shards, full)
    assert all(0.45 * full[0] <= s <= 0.55 * full[0] for s in shards), (shards, full)
    assert len({r.params_digest for r in zero.ranks}) == 1  # each step's broadcast keeps replicas equal


@pytest.mark.parametrize("layout", [dict(strategy="fsdp"), dict(strategy="hybrid", hybrid="fsdp+tensor", mesh="2x1")],
                         ids=["fsdp", "fsdp+tensor"])
def test_zero_2_and_3_train_to_singles_losses(session, single_runs, layout):
    runs = {zero: run_ok(session, workers=2, zero=zero, **MODELS["gpt"], **layout) for zero in (2, 3)}
    assert mismatches(runs[2], single_runs["gpt"]) == [] and mismatches(runs[3], single_runs["gpt"]) == []
    assert mismatches(runs[2], runs[3]) == []
    assert [r.config["zero"] for r in runs.values()] == [2, 3]
    # Both shard the optimizer state over the 2 data-parallel ranks alike.
    assert [r.optimizer_bytes for r in runs[2].ranks] == [r.optimizer_bytes for r in runs[3].ranks]
