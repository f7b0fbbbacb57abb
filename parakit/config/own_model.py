"""The settings that tell parakit about a model of your own, and how they combine with the
layouts: where its blocks are (``blocks``), who computes its loss (``loss="model"``), whose
tensor plan it takes (``tp_plan="auto"``) and whether BatchNorm syncs (``sync_batchnorm``).
Standard library only: what can be checked without building the model is refused here;
what needs the model (a name it does not have) is checked on the meta device before any
engine is touched (engine/model_check.py, called by session/preflight.py)."""

from __future__ import annotations

from typing import Any

from parakit.config.layouts import Strategy

MODEL_LOSS = "model"
"""``loss="model"``: the model computes its own loss, called as ``model(inputs, labels=targets)``
and read from the output's ``.loss`` (or its first element), as transformers models do."""
AUTO_PLAN = "auto"
"""``tp_plan="auto"``: the model's own tensor plan (a transformers model's ``base_model_tp_plan``)."""
WHOLE_MODEL = "(the whole model)"
"""How ``sharded_units`` and ``checkpointed_units`` name the model when it had to be one unit."""
SYNC_BATCHNORM_FOR = (Strategy.DDP, Strategy.FSDP)
"""The layouts whose ranks each see a slice of the batch and hold whole BatchNorm layers."""


def check_blocks(blocks: Any) -> tuple[Any, ...] | None:
    """``blocks`` as a tuple of module names, classes and class names (None: find them).

    Raises:
        ValueError: anything else, in one line with an example.
    """
    if blocks is None:
        return None
    items = (blocks,) if isinstance(blocks, (str, type)) else blocks
    if not isinstance(items, (list, tuple)) or not items or not all(isinstance(b, (str, type)) for b in items):
        raise ValueError("blocks must be a module name, a class, or a list of them, e.g. blocks='model.layers' "
                         f"or blocks=[MyBlock] (got {blocks!r})")
    return tuple(items)


def check_own_model(config: Any) -> None:
    """Raise ValueError, in one line that names the fix, where ``loss`` or ``sync_batchnorm``
    do not fit ``config``'s layout."""
    if config.loss == MODEL_LOSS and config.uses_pipeline:
        raise ValueError("loss='model' does not combine with pipelines: the model computes its loss inside "
                         "from labels that every stage would have to carry; give loss= a function "
                         "(outputs, targets) -> loss, e.g. one that reads outputs.logits")
    if config.loss == MODEL_LOSS and isinstance(config.model, str):
        raise ValueError(f"loss='model' is for a model that computes its own loss; {config.model} does not "
                         "(leave loss unset for cross-entropy)")
    if not isinstance(config.sync_batchnorm, bool):
        raise ValueError(f"sync_batchnorm must be True or False (got {config.sync_batchnorm!r})")
    layout = config.hybrid if config.strategy is Strategy.HYBRID else config.strategy
    if config.sync_batchnorm and layout not in SYNC_BATCHNORM_FOR:
        raise ValueError(f"sync_batchnorm applies to ddp and fsdp, whose ranks each normalise a slice of the "
                         f"batch; {layout} has no such slices (drop sync_batchnorm)")


def check_loss(loss: Any) -> None:
    if loss is not None and loss != MODEL_LOSS and not callable(loss):
        raise ValueError("loss must be a callable (outputs, targets) -> scalar tensor, or 'model' for a model "
                         f"that computes its own loss from labels= (got {loss!r})")


def describe_own_model(config: Any) -> dict[str, Any]:
    """The run record's entries for these settings, only where set, so that other runs'
    records compare equal."""
    out: dict[str, Any] = {}
    if config.blocks is not None:
        out["blocks"] = [b.__name__ if isinstance(b, type) else b for b in config.blocks]
    if config.sync_batchnorm:
        out["sync_batchnorm"] = True
    return out

