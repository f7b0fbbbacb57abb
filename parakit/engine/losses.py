"""A run's loss, whatever the model returns: a tensor (parakit's own models), a transformers
``ModelOutput`` (its ``.logits``), a tuple (its first element), or the model's own loss
(``loss="model"``: the model is called with ``labels=`` and computes it, as transformers
models do). Every forward parakit makes goes through ``forward_loss``: the strategies', the
FLOP count's and the memory model's."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.nn import functional as F

from parakit.config.own_model import MODEL_LOSS


def logits_of(outputs: Any) -> torch.Tensor:
    """The model's predictions in ``outputs``: ``.logits`` where it has them (a transformers
    ModelOutput), the first element of a tuple or list, else ``outputs`` itself."""
    logits = getattr(outputs, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    if isinstance(outputs, (tuple, list)) and outputs:
        return outputs[0]
    return outputs


def cross_entropy(outputs: Any, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the model's logits (``logits_of``); takes sequence outputs (B, T, V)
    with targets (B, T)."""
    logits = logits_of(outputs)
    return F.cross_entropy(logits.flatten(0, -2), targets.flatten())


class ModelLoss:
    """``loss="model"``: the loss the model computed from ``labels=``, its output's ``.loss``
    (or first element). A marker as much as a function: ``forward_loss`` sees it and passes
    the targets to the model as ``labels``."""

    __name__ = MODEL_LOSS

    def __call__(self, outputs: Any, targets: Any = None) -> torch.Tensor:
        loss = getattr(outputs, "loss", None)
        if loss is None and isinstance(outputs, (tuple, list)) and outputs:
            loss = outputs[0]
        if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
            raise ValueError("loss='model' needs a model that returns its loss when called with labels= "
                             f"(as a .loss or the first element); it returned {type(outputs).__name__}")
        return loss


LossFn = Callable[[Any, Any], torch.Tensor]
"""(outputs, targets) -> a scalar loss."""


def loss_function(loss: Any) -> LossFn:
    """The run's ``loss`` setting as a function: cross-entropy of the logits when None, the
    model's own for "model", else the user's callable."""
    if loss is None:
        return cross_entropy
    return ModelLoss() if loss == MODEL_LOSS else loss


def forward_loss(model: Callable[..., Any], loss_fn: LossFn, inputs: Any, targets: Any) -> torch.Tensor:
    """One forward of ``inputs`` and its loss: ``loss_fn(model(inputs), targets)``, or with
    ``loss="model"`` the model's own, from ``model(inputs, labels=targets)``."""
    if isinstance(loss_fn, ModelLoss):
        return loss_fn(model(inputs, labels=targets))
    return loss_fn(model(inputs), targets)
