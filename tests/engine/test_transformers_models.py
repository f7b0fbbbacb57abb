"""Models as users bring them: a tiny transformers Llama (random init from a config, nothing
downloaded) under every strategy, and a model with BatchNorm under ddp, on one pair of CPU
engines. The Llama returns a ModelOutput and its blocks sit at model.model.layers; the loss
reads ``outputs.logits``, as a user's would. Each layout must equal single within 1e-4 (3 steps,
fp32, the same seed and batches), fsdp must shard it layer by layer, tensor takes the model's
own plan (tp_plan="auto", keys with ``*``), and pipeline traces it with its KV cache off."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

pytest.importorskip("transformers")

STEPS, REL = 3, 1e-4


def tiny_llama():
    import transformers

    config = transformers.LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return transformers.LlamaForCausalLM(config)


def tokens(step, n):
    """Next-token prediction over random sequences of 8 tokens."""
    x = torch.randint(0, 128, (n, 9), generator=torch.Generator().manual_seed(step))
    return x[:, :-1], x[:, 1:]


def next_token_loss(outputs, targets):
    return F.cross_entropy(outputs.logits.flatten(0, 1), targets.flatten())


LLAMA = dict(model=tiny_llama, data=tokens, loss=next_token_loss, steps=STEPS, warmup_steps=1, batch_size=8,
             seed=5, profile_every=0, live=False)


@pytest.fixture(scope="module")
def pair(session):
    """The suite's shared pair of CPU engines (tests/conftest.py): starting two costs ~9 s."""
    return session


@pytest.fixture(scope="module")
def single(pair):
    run = pair.run(strategy="single", **LLAMA)
    assert run.ok, run.error
    return run


def mismatches(run, reference):
    assert run.ok, run.error
    assert len(run.steps) == len(reference.steps) == STEPS
    return [(s.loss, t.loss) for s, t in zip(run.steps, reference.steps) if abs(s.loss - t.loss) > REL * abs(t.loss)]


@pytest.mark.parametrize("layout", [
    dict(strategy="ddp"),
    dict(strategy="fsdp"),
    dict(strategy="tensor", tp_plan="auto"),
    dict(strategy="pipeline", split=["model.layers.2"]),
], ids=lambda d: d["strategy"])
def test_a_transformers_llama_trains_as_single_under_every_strategy(pair, single, layout):
    run = pair.run(workers=2, **LLAMA, **layout)
    assert mismatches(run, single) == []
    if layout["strategy"] == "fsdp":
        assert run.summary["sharded_units"] == [f"model.layers.{i}" for i in range(4)]
        assert not any("one unit" in w for w in run.warnings)
    if layout["strategy"] == "tensor":
        # each rank holds half of every planned projection (q, k, v, o, gate, up, down)
        assert run.ranks[0].param_bytes < 0.75 * single.ranks[0].param_bytes


class Pick(nn.Module):
    """A block whose Python branches on a value (its weights', so every micro-batch and every
    layout takes the same branch): torch.export cannot capture it."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(16, 16)

    def forward(self, x):
        return torch.tanh(self.fc(x)) if self.fc.weight.sum() > 0 else torch.sigmoid(self.fc(x))


def untraceable():
    return nn.Sequential(nn.Linear(8, 16), Pick(), Pick(), Pick(), nn.Linear(16, 3))


def rows(step, n):
    x = torch.randn(n, 8, generator=torch.Generator().manual_seed(step))
    return x, (x[:, 0] > 0).long() + (x[:, 1] > 0).long()


def test_a_pipeline_cuts_by_module_what_export_cannot_trace(pair):
    own = dict(model=untraceable, data=rows, steps=STEPS, warmup_steps=1, batch_size=8, seed=2, profile_every=0,
               live=False)
    single_run = pair.run(strategy="single", **own)
    pipe = pair.run(strategy="pipeline", workers=2, split=["2"], **own)
    assert mismatches(pipe, single_run) == []


class Normed(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc, self.bn, self.out = nn.Linear(8, 16), nn.BatchNorm1d(16), nn.Linear(16, 3)

    def forward(self, x):
        return self.out(torch.relu(self.bn(self.fc(x))))


def test_batchnorm_under_ddp_normalises_each_ranks_slice(pair):
    own = dict(model=Normed, data=rows, steps=STEPS, warmup_steps=1, batch_size=8, seed=2, profile_every=0,
               live=False)
    single_run = pair.run(strategy="single", **own)
    ddp = pair.run(strategy="ddp", workers=2, **own)
    assert ddp.ok, ddp.error
    # Each rank's statistics are its own 4 rows', not the batch's 8: the first loss already differs
    # (SyncBatchNorm, sync_batchnorm=True on GPU engines, would make them single's); DDP
    # broadcasts rank 0's running statistics, so the replicas still end identical.
    assert abs(ddp.steps[0].loss - single_run.steps[0].loss) > 1e-3
    assert ddp.summary["params_in_sync"] is True
