"""The advisor's shape pass builds the user's model on the meta device; only when torch refuses
there for want of real tensors is it built again on the CPU. Any other failure is the model's
own and is raised once, naming the model (no engines, a few tiny models)."""

from dataclasses import replace

import pytest
import torch
from torch import nn

from parakit.engine.shape import model_shape
from parakit.config.run import RunConfig

BUILDS = []  # the device each build of a model below ran on


def data(step, global_batch_size):
    x = torch.randn(global_batch_size, 6, generator=torch.Generator().manual_seed(step))
    return x, x.sum(dim=1)


def mse(outputs, targets):
    return nn.functional.mse_loss(outputs, targets)


class Plain(nn.Module):
    def __init__(self):
        super().__init__()
        BUILDS.append(torch.empty(0).device.type)
        self.body = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 1))

    def forward(self, x):
        return self.body(x).squeeze(-1)


class ReadsItsWeights(Plain):
    """Reads a value at construction: meta tensors hold none, so it needs the CPU."""

    def __init__(self):
        super().__init__()
        self.scale = float(self.body[0].weight.detach().abs().max())


class Broken(Plain):
    def __init__(self):
        super().__init__()
        raise ValueError("the user's own bug")


def shape_of(model):
    BUILDS.clear()
    return model_shape(RunConfig(model=model, data=data, loss=mse, batch_size=4))


def test_a_model_is_built_once_on_meta():
    shape = shape_of(Plain)
    assert BUILDS == ["meta"]
    assert shape.name == "Plain" and sum(p.params for p in shape.parts) == 6 * 16 + 16 + 16 + 1


def test_a_model_that_needs_real_tensors_is_built_again_on_the_cpu():
    shape = shape_of(ReadsItsWeights)
    assert BUILDS == ["meta", "cpu"]
    assert shape == replace(shape_of(Plain), name="ReadsItsWeights")  # the same figures as on meta


def test_any_other_failure_is_raised_once_naming_the_model():
    with pytest.raises(RuntimeError, match="^cannot build the model 'Broken' to measure its shape: "
                                           "ValueError: the user's own bug$") as raised:
        shape_of(Broken)
    assert BUILDS == ["meta"]  # not run a second time on the CPU
    assert isinstance(raised.value.__cause__, ValueError)  # the model's own traceback is kept
