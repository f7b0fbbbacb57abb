"""How a pipeline cuts a model into stages: where (the user's split points, or cuts that balance
the blocks' parameters), and how:

- traced: ``torch.distributed.pipelining.pipeline`` captures the whole model with torch.export
  and cuts the graph at the split points. Any forward export can capture, whatever it passes
  between the modules (a transformers decoder hands its layers the attention mask and the
  rotary embeddings beside the hidden states: the traced stages send them on too).
- by module, where export cannot capture the model: each stage keeps the modules between its
  split points and drops the others, as torchtitan builds its stages without tracing. Only an
  ``nn.Sequential`` (nested Sequentials allowed) says how its modules chain, so only such a
  model can be cut so; any other is refused with what to do (``why_not_by_module``).

A transformers model is traced with its KV cache off (``config.use_cache = False``): training
never reads the cache, and the DynamicCache it builds is what export cannot capture.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.distributed.pipelining import SplitPoint, pipeline
from torch.utils._pytree import tree_flatten, tree_unflatten

from parakit.engine.blocks import find_blocks
from parakit.engine.names import nearest


def balanced_cuts(sizes: list[int], stages: int) -> list[int]:
    """Indices where stages 1.. begin, so that the largest stage's parameter count is as small
    as it can be (contiguous blocks, each stage at least one). A small dynamic programme."""
    n = len(sizes)
    prefix = [0]
    for s in sizes:
        prefix.append(prefix[-1] + s)
    inf = float("inf")
    # best[k][i]: the smallest max-stage-size putting the first i blocks into k stages
    best = [[inf] * (n + 1) for _ in range(stages + 1)]
    cut = [[0] * (n + 1) for _ in range(stages + 1)]
    best[0][0] = 0
    for k in range(1, stages + 1):
        for i in range(k, n + 1):
            for j in range(k - 1, i):
                cost = max(best[k - 1][j], prefix[i] - prefix[j])
                if cost < best[k][i]:
                    best[k][i], cut[k][i] = cost, j
    cuts, i = [], n
    for k in range(stages, 0, -1):
        i = cut[k][i]
        cuts.append(i)
    return sorted(cuts)[1:]  # the first stage begins at block 0


def split_points(model: nn.Module, split: Sequence[str] | None, stages: int, blocks: Any = None) -> list[str]:
    """The user's split points, or cuts that balance parameters over the model's blocks.

    Raises:
        ValueError: a split point the model does not have, naming the nearest names.
    """
    if split:
        names = dict(model.named_modules())
        for name in split:
            if name not in names:
                raise ValueError(f"split names {name!r}, which the model does not have; {nearest(name, names)}")
        return list(split)
    found = find_blocks(model, blocks)
    sizes = [sum(p.numel() for p in b.parameters()) for _, b in found]
    return [found[i][0] for i in balanced_cuts(sizes, stages)]


def cache_off(model: nn.Module) -> None:
    """A transformers model's KV cache off: training never reads it, and export cannot capture it."""
    config = getattr(model, "config", None)
    if getattr(config, "use_cache", None):
        config.use_cache = False


def output_spec(model: nn.Module, microbatch: Any):
    """How the model's output nests (a ModelOutput, a tuple), to give the loss the output as
    the model returns it: the traced last stage returns its tensors flat. One forward of a
    micro-batch without gradients, once per run; None where the output is a plain tensor."""
    # the random state as it was: a dropout here must not move the run's draws off single's
    cuda = [torch.cuda.current_device()] if torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=cuda), torch.no_grad():
        _, spec = tree_flatten(model(microbatch))
    return None if spec.is_leaf() else spec


def as_model_returns(outputs: Any, spec) -> Any:
    """The last stage's flat outputs nested as the model returns them (``output_spec``)."""
    if spec is None:
        return outputs
    leaves = list(outputs) if isinstance(outputs, (tuple, list)) else [outputs]
    return tree_unflatten(leaves, spec)


def traced_stages(model: nn.Module, microbatch: Any, points: list[str]) -> list[nn.Module]:
    """Every stage's module, cut from the graph torch.export captures.

    Raises:
        RuntimeError: export cannot capture the model (its cause chained).
    """
    # A failed capture prints the graph so far to stderr and logs a warning: the refusal or the
    # cut by module that follows says what matters, in one line.
    shapes = logging.getLogger("torch.fx.experimental.symbolic_shapes")
    level = shapes.level
    shapes.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore", FutureWarning)  # torch.export's internal deprecations
            pipe = pipeline(model, mb_args=(microbatch,), split_spec=dict.fromkeys(points, SplitPoint.BEGINNING))
    finally:
        shapes.setLevel(level)
    if pipe.num_stages != len(points) + 1:
        raise ValueError(f"split points gave {pipe.num_stages} stages; {len(points) + 1} are needed")
    return [pipe.get_stage_module(i) for i in range(pipe.num_stages)]


def chain(model: nn.Module, prefix: str = "") -> list[str]:
    """The names of the modules an ``nn.Sequential`` runs one after another, nested
    Sequentials opened ([] for a model that is not a Sequential)."""
    if not isinstance(model, nn.Sequential):
        return []
    names = []
    for name, child in model.named_children():
        full = f"{prefix}{name}"
        names += chain(child, f"{full}.") if isinstance(child, nn.Sequential) else [full]
    return names


def why_not_by_module(model: nn.Module, points: list[str]) -> str | None:
    """Why the model cannot be cut by module at ``points``; None where it can."""
    links = chain(model)
    if not links:
        return (f"{type(model).__name__} is not an nn.Sequential, so nothing says how its modules chain; "
                "make it one (nn.Sequential(embed, *blocks, head)) with split= names in it, or wrap it so")
    starts = [_first_link(links, p) for p in points]
    if None in starts:
        name = points[starts.index(None)]
        return (f"split point {name!r} is not a module its nn.Sequential runs in turn; use names in its chain "
                f"({', '.join(links[1:4])}, ...)")
    if starts != sorted(set(starts)) or starts[0] == 0:
        return "the split points must be in the order the model runs them, after its first module"
    return None


def module_stages(model: nn.Module, points: list[str], indices: Sequence[int]) -> list[nn.Module]:
    """Stages ``indices`` of ``model`` cut by module: each a copy of the model keeping only the
    chain's modules between its split points, under their own names (so saved states and the
    optimizer see the model's names)."""
    links = chain(model)
    starts = [0] + [_first_link(links, p) for p in points] + [len(links)]
    stages = []
    for i in indices:
        # a rank of one stage (every schedule but interleaved) cuts the model itself: no copy
        stage = model if len(indices) == 1 else copy.deepcopy(model)
        for name in links[: starts[i]] + links[starts[i + 1]:]:
            parent, _, child = name.rpartition(".")
            del stage.get_submodule(parent)._modules[child]
        stages.append(stage)
    return stages


def cannot_cut(model: nn.Module, error: BaseException, why: str) -> str:
    """The one line a pipeline is refused with: export's reason, then why not by module."""
    cause = error.__cause__ or error
    said = " ".join(str(cause).split())
    said = said if len(said) <= 160 else said[:157] + "..."
    return (f"pipeline cannot cut {type(model).__name__} into stages: torch.export cannot capture it "
            f"({type(cause).__name__}: {said}), and it cannot be cut by module: {why}")


def _first_link(links: list[str], point: str) -> int | None:
    return next((i for i, n in enumerate(links) if n == point or n.startswith(point + ".")), None)
