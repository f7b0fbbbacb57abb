"""Your own model, data and loss by name: looked up in the notebook's namespace, or imported as
package.module:name; an unknown name is one line listing what there is."""

from __future__ import annotations

import pytest
from torch import nn

from parakit.frontends.names import candidates, resolve


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(x)


def batches(step, global_batch_size):
    import torch

    return torch.randn(global_batch_size, 4), torch.randint(0, 2, (global_batch_size,))


def my_loss(outputs, targets):
    return nn.functional.cross_entropy(outputs, targets)


NAMESPACE = {"Tiny": Tiny, "batches": batches, "my_loss": my_loss, "width": 3, "nn": nn}
for _f in (batches, my_loss):
    _f.__module__ = "__main__"  # as a notebook cell's functions are


def test_names_in_the_namespace_become_the_objects_and_built_ins_stay_text():
    out = resolve({"model": "Tiny", "data": "batches", "loss": "my_loss", "steps": 3}, NAMESPACE)
    assert out == {"model": Tiny, "data": batches, "loss": my_loss, "steps": 3}
    assert resolve({"model": "gpt", "data": None}, NAMESPACE) == {"model": "gpt", "data": None}
    assert resolve({"model": ["mlp", "Tiny"]}, NAMESPACE)["model"] == ["mlp", Tiny]  # a sweep's list


def test_a_module_path_is_imported_without_a_namespace():
    assert resolve({"loss": "torch.nn.functional:cross_entropy"})["loss"] is nn.functional.cross_entropy
    with pytest.raises(ValueError, match=r"loss 'torch.nn:nosuch' cannot be imported .*; give package.module:name"):
        resolve({"loss": "torch.nn:nosuch"})


@pytest.mark.parametrize("settings, message", [
    ({"model": "Tinyy"}, "unknown model 'Tinyy': the built-ins are mlp, cnn, gpt; in this notebook: Tiny, batches, my_loss"),
    ({"data": "batchez"}, "unknown data 'batchez': in this notebook: batches, my_loss"),
    ({"model": "width"}, "model 'width' is a int, not a zero-argument callable or an nn.Module class"),
])
def test_an_unknown_name_is_one_line_listing_the_candidates(settings, message):
    with pytest.raises(ValueError) as caught:
        resolve(settings, NAMESPACE)
    assert str(caught.value) == message


def test_candidates_are_module_classes_for_models_and_notebook_functions():
    assert candidates("model", NAMESPACE) == ["Tiny", "batches", "my_loss"]
    assert candidates("loss", {"nn": nn, "_private": my_loss}) == []
