"""A run's state on disk with torch.distributed.checkpoint (DCP): saved sharded as it was
trained, loaded resharded into whatever layout and worker count comes next.

Two phases on load, because the layouts need different state dicts:
1. The model's parameters are read in full into the plain model, before the strategy lays it
   out (``load_model``): fully_shard and parallelize_module then shard the loaded values, DDP
   broadcasts them, and the sync modes (local SGD, DiLoCo) take them as their anchor.
2. The optimizer's state is read after the optimizer exists (``load_optimizer``), through
   ``get_optimizer_state_dict`` / ``set_optimizer_state_dict``: sharded (DTensor) under fsdp and
   tensor, plain under ddp and single. The keys are parameter names, the same in every layout.

The RNG state saved is rank 0's; every rank of the next segment starts from it (the ranks run
the same code from the same seed, so their generators agree unless a layout draws on one rank
only). One rank alone (``single``) reads and writes without collectives (``no_dist``): the
engines' process group may have more ranks than this run uses.
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import Future

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    get_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from parakit.config.switch import STATE_FACTS as FACTS  # its presence says a save finished
from parakit.engine.zero_state import flat_state, is_zero, load_flat_state


# Flattened, the optimizer's state and its groups' settings are keyed by parameter name
# ("state.h.0.attn.weight.exp_avg", "param_groups.h.0.attn.weight.lr"), not by group index:
# layouts group parameters differently (tensor parallelism puts DTensors and plain tensors in
# groups of their own), and a name means the same parameter in every one (torchtitan does this).
FLAT = StateDictOptions(flatten_optimizer_state_dict=True)


def _model(parallel) -> torch.nn.Module:
    """What this rank holds, as one module whose parameters carry the model's names: the model
    (its layout's wrapper), or a pipeline rank's stages. A traced stage keeps the model's
    names ("blocks.1.attn.q.weight"), so an interleaved rank's two stages merge into one."""
    modules = parallel.modules
    return modules[0] if len(modules) == 1 else merged(modules)


def merged(modules: list[torch.nn.Module]) -> torch.nn.Module:
    """One container holding these modules' children under their own names, merging children
    of the same name ("blocks" of stage 0 holds block 0, of stage 2 block 2). The modules are
    shared, not copied: loading into the container loads into them."""
    whole = torch.nn.Module()
    for module in modules:
        if next(module.named_parameters(recurse=False), None) or next(module.named_buffers(recurse=False), None):
            raise ValueError(f"{type(module).__name__} holds tensors of its own; its stages cannot be merged by name")
        for name, child in module.named_children():
            known = whole._modules.get(name)
            whole._modules[name] = child if known is None else merged([known, child])
    return whole


def save(parallel, optimizer, path: str, *, step: int, settings: dict, rank: int, alone: bool) -> float:
    """Save model, optimizer and RNG state after ``step`` steps to ``path``. Returns seconds."""
    started = time.perf_counter()
    dcp.save(state_dict(parallel, optimizer), checkpoint_id=path,
             no_dist=alone)  # note: collectives with every rank (plans, barrier)
    if rank == 0:
        write_facts(path, step, settings, time.perf_counter() - started)
    return time.perf_counter() - started


def save_in_background(parallel, optimizer, path: str, *, group, alone: bool) -> Future:
    """Start saving the same state to ``path`` and return at once, the state copied to CPU memory
    first (DCP's stager) so training may change it meanwhile; DCP writes it in a thread of its
    own. ``group`` is a process group for that thread's collectives alone: sharing the run's
    would interleave them with the training's. The future is done when every rank's share is
    written and rank 0 has written DCP's metadata; ``write_facts`` is the caller's, then."""
    return dcp.async_save(state_dict(parallel, optimizer), checkpoint_id=path, process_group=group, no_dist=alone)


def state_dict(parallel, optimizer) -> dict:
    """What a saved state holds: the model's and the optimizer's state by parameter name, and RNG."""
    model = _model(parallel)
    if is_zero(optimizer):  # ZeRO-1: each rank its share, under the same flattened names
        model_sd, optim_sd = get_model_state_dict(model), flat_state(model, optimizer)
    else:
        model_sd, optim_sd = get_state_dict(model, optimizer, options=FLAT)
    return {"model": model_sd, "optim": optim_sd, "rng": torch.get_rng_state()}


def write_facts(path: str, step: int, settings: dict, saved_s: float, **more) -> None:
    """Rank 0, once every rank's share is written: the steps done and the settings (and
    ``more``: a checkpoint's losses), beside DCP's files."""
    facts = {"steps_done": step, "settings": settings, "saved_s": saved_s, **more}
    tmp = os.path.join(path, FACTS + ".tmp")
    with open(tmp, "w") as f:
        json.dump(facts, f)
    os.replace(tmp, os.path.join(path, FACTS))  # last: its presence says the save finished


def load_model(model: torch.nn.Module, path: str) -> None:
    """Phase 1: every parameter and buffer, in full, into the plain (not yet laid out) model."""
    state = {"model": get_model_state_dict(model)}
    dcp.load(state, checkpoint_id=path, no_dist=True)  # each rank reads what it needs: no collective
    set_model_state_dict(model, state["model"])
    rng = {"rng": torch.get_rng_state()}
    dcp.load(rng, checkpoint_id=path, no_dist=True)
    torch.set_rng_state(rng["rng"])


def load_optimizer(parallel, optimizer, path: str, *, alone: bool) -> None:
    """Phase 2: the optimizer's state, resharded for this layout. get_optimizer_state_dict
    first makes the state exist (a step with zero gradients and lr 0), so DCP has tensors of
    the right shapes and shardings to read into."""
    model = _model(parallel)
    if is_zero(optimizer):
        state = {"optim": flat_state(model, optimizer)}
        dcp.load(state, checkpoint_id=path, no_dist=alone)
        load_flat_state(model, optimizer, state["optim"])
    else:
        state = {"optim": get_optimizer_state_dict(model, optimizer, options=FLAT)}
        dcp.load(state, checkpoint_id=path, no_dist=alone)
        set_optimizer_state_dict(model, optimizer, state["optim"], options=FLAT)
    optimizer.zero_grad(set_to_none=True)  # the zero gradients of that step are not the run's
