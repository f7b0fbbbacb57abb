"""A model's units found wherever they sit (engine/blocks.py), and what fsdp does with them: on
a tiny transformers Llama (random init from a config, nothing downloaded) its decoder layers,
nested at model.model.layers, are each an FSDP unit, so fsdp gathers one layer at a time
instead of the whole model. In this process, on a gloo group of one rank."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.distributed.tensor import DTensor
from torch.nn import functional as F

from parakit.config.own_model import WHOLE_MODEL
from parakit.config.run import RunConfig
from parakit.engine.blocks import block_names
from parakit.engine.compose import Setup, compose
from parakit.engine.losses import ModelLoss, cross_entropy, forward_loss
from parakit.engine.workloads import build_model

transformers = pytest.importorskip("transformers")


def tiny_llama(layers: int = 4) -> nn.Module:
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return transformers.LlamaForCausalLM(config)


class Inner(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Linear(8, 16)
        self.layers = nn.ModuleList(nn.Sequential(nn.Linear(16, 16), nn.Tanh()) for _ in range(3))
        self.small = nn.ModuleList([nn.Linear(2, 2), nn.Linear(2, 2)])  # a list, but not the largest


class Wrapped(nn.Module):
    """A user's model built the transformers way, without ``_no_split_modules``."""

    def __init__(self):
        super().__init__()
        self.model, self.head = Inner(), nn.Linear(16, 3)


class NoBlocks(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 2)


@pytest.mark.parametrize("make, blocks, expected", [
    (lambda: build_model("gpt", {"depth": 2}), None, ["blocks.0", "blocks.1"]),  # a top-level list, as before
    (tiny_llama, None, [f"model.layers.{i}" for i in range(4)]),  # _no_split_modules: LlamaDecoderLayer
    (Wrapped, None, ["model.layers.0", "model.layers.1", "model.layers.2"]),  # the largest nested list
    (Wrapped, "model.small", ["model.small.0", "model.small.1"]),  # the user's word
    (Wrapped, ["model.stem", "head"], ["model.stem", "head"]),
    (Wrapped, [nn.Tanh], ["model.layers.0.1", "model.layers.1.1", "model.layers.2.1"]),
    (NoBlocks, None, []),
])
def test_a_models_blocks_are_found_wherever_they_sit(make, blocks, expected):
    assert block_names(make(), blocks) == expected


def gathered_peak_bytes(model: nn.Module, step) -> int:
    """The most bytes of gathered (whole, not sharded) parameters held at once while ``step``
    runs a forward and backward: FSDP2 swaps each unit's DTensor shards for whole Parameters
    while it runs, so at each leaf module's forward and backward the gathered ones are counted."""
    peak = 0

    def count(*_):
        nonlocal peak
        held = sum(p.numel() * p.element_size() for p in model.parameters() if not isinstance(p, DTensor))
        peak = max(peak, held)

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_pre_hook(count) for m in leaves]
    handles += [m.register_full_backward_pre_hook(count) for m in leaves]
    try:
        step()
    finally:
        for h in handles:
            h.remove()
    return peak


@pytest.mark.filterwarnings("ignore:Full backward hook is firing")
def test_fsdp_gathers_a_nested_model_one_layer_at_a_time(group_of_one):
    x = torch.randint(0, 128, (2, 8), generator=torch.Generator().manual_seed(1))
    whole = sum(p.numel() * 4 for p in tiny_llama().parameters())
    layer = sum(p.numel() * 4 for p in tiny_llama().model.layers[0].parameters())
    peaks, units = {}, {}
    for blocks in (None, ["lm_head"]):  # found, and as good as none: one unit of the head, the rest the root
        model = tiny_llama()
        config = RunConfig(model=tiny_llama, data=lambda s, n: (x, x), strategy="fsdp", workers=1, blocks=blocks)
        parallel = compose(model, Setup(config=config, device=torch.device("cpu"), loss_fn=cross_entropy))
        peaks[str(blocks)] = gathered_peak_bytes(model, lambda: parallel.forward_backward(x, x))
        units[str(blocks)] = parallel.sharded_units
    assert units["None"] == [f"model.layers.{i}" for i in range(4)]
    # Measured: 70,016 of 181,376 bytes (39 %): the root unit (embeddings, final norm, head:
    # 32,896 bytes) and one layer (37,120). With the head the only unit, the root holds the
    # layers, and all 181,376 bytes are gathered at once.
    assert peaks["None"] == (whole - 4 * layer) + layer
    assert peaks["['lm_head']"] == whole


def test_a_model_without_blocks_is_one_unit_and_says_so(group_of_one):
    x, y = torch.randn(4, 4), torch.tensor([0, 1, 0, 1])
    for strategy, field in (("fsdp", "sharded_units"), ("single", "checkpointed_units")):
        config = RunConfig(model=NoBlocks, data=lambda s, n: (x, y), strategy=strategy, workers=1,
                           activation_checkpointing="full")
        model = NoBlocks()
        parallel = compose(model, Setup(config=config, device=torch.device("cpu"), loss_fn=F.cross_entropy))
        assert getattr(parallel, field) == [WHOLE_MODEL]
        assert parallel.checkpointed_units == [WHOLE_MODEL]


def test_a_model_output_and_the_models_own_loss(group_of_one):
    model, x = tiny_llama(2), torch.randint(0, 128, (2, 8), generator=torch.Generator().manual_seed(3))
    logits = model(x).logits
    # cross-entropy reads a ModelOutput's .logits, and a tuple's first element
    assert cross_entropy(model(x), x).item() == pytest.approx(F.cross_entropy(logits.flatten(0, 1), x.flatten()).item())
    assert cross_entropy((logits, None), x).item() == pytest.approx(cross_entropy(logits, x).item())
    # loss="model": the model is given labels= and its own (shifted, next-token) loss is trained on
    own = forward_loss(model, ModelLoss(), x, x)
    shifted = F.cross_entropy(logits[:, :-1].flatten(0, 1), x[:, 1:].flatten())
    assert own.item() == pytest.approx(shifted.item(), rel=1e-6)
    # ... through DDP's wrapper too, which passes labels= on to the model
    config = RunConfig(model=tiny_llama, data=lambda s, n: (x, x), strategy="ddp", workers=1, loss="model")
    parallel = compose(tiny_llama(2), Setup(config=config, device=torch.device("cpu"), loss_fn=ModelLoss()))
    assert parallel.forward_backward(x, x).item() == pytest.approx(shifted.item(), rel=1e-6)
    with pytest.raises(ValueError, match="loss='model' needs a model that returns its loss"):
        forward_loss(lambda inputs, labels: logits, ModelLoss(), x, x)
