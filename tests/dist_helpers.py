"""Real 2-rank gloo groups for tests: spawn processes, join them over TCP on 127.0.0.1, run a
function on every rank, return each rank's result.

The rank functions live here (not in the test modules) so spawned children import them by
name. They return plain data (numpy arrays, ints, lists), never tensors: a tensor sent through
a multiprocessing queue travels as shared memory tied to the child, which exits right after.
"""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import queue
import socket
import traceback
from collections.abc import Callable
from typing import Any

import numpy as np


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _child(fn: Callable, rank: int, world_size: int, port: int, args: tuple, results) -> None:
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)  # 2 ranks on a shared 2-core machine
    try:
        dist.init_process_group(
            "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size
        )
        results.put((rank, True, fn(rank, world_size, *args)))
    except BaseException:  # noqa: BLE001 - reported to the parent, which raises it
        results.put((rank, False, traceback.format_exc()))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def run_ranks(fn: Callable, *args: Any, world_size: int = 2, timeout_s: float = 60) -> list[Any]:
    """Run ``fn(rank, world_size, *args)`` on ``world_size`` spawned ranks; results by rank."""
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    port = free_port()
    procs = [
        ctx.Process(target=_child, args=(fn, rank, world_size, port, args, results), daemon=True)
        for rank in range(world_size)
    ]
    for p in procs:
        p.start()
    by_rank: dict[int, Any] = {}
    try:
        for _ in procs:
            rank, ok, value = results.get(timeout=timeout_s)
            if not ok:
                raise AssertionError(f"rank {rank} failed:\n{value}")
            by_rank[rank] = value
    except queue.Empty:
        raise AssertionError(f"ranks {sorted(set(range(world_size)) - set(by_rank))} timed out") from None
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
    return [by_rank[r] for r in range(world_size)]


def run_sequence(rank: int, world_size: int, calls: list[tuple[Callable, dict]]) -> list[Any]:
    """Run several rank functions one after another in the same group (one spawn, one import
    of torch per rank for a whole test module)."""
    return [fn(rank, world_size, **kwargs) for fn, kwargs in calls]


# -- the model and data ---------------------------------------------------------------------
def tiny_model(width: int = 64, inputs: int = 16, outputs: int = 4):
    import torch
    from torch import nn

    torch.manual_seed(0)  # the same weights on every rank
    return nn.Sequential(nn.Linear(inputs, width), nn.ReLU(), nn.Linear(width, outputs))


def square_model(width: int = 256):
    """Two width x width layers: matrices large enough for PowerSGD and top-k to matter."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, width))


def batch(model, rank: int, step: int, rows: int = 8):
    """A batch that differs between ranks and steps, so local gradients differ."""
    import torch

    first = next(model.parameters())
    g = torch.Generator().manual_seed(1000 * step + rank)
    x = torch.randn(rows, first.shape[1], generator=g, dtype=first.dtype)
    y = torch.randn(rows, model[-1].out_features, generator=g, dtype=first.dtype)
    return x, y


def flat_params(model) -> np.ndarray:
    import torch

    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).float().numpy().copy()


def digest(model) -> str:
    return hashlib.sha256(flat_params(model).tobytes()).hexdigest()[:16]


def grad_bytes(model) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)


def sgd_step(model, optimizer, xy) -> None:
    import torch

    x, y = xy
    loss = torch.nn.functional.mse_loss(model(x), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()  # the DDP hooks run here
    optimizer.step()


# -- rank functions -------------------------------------------------------------------------
def train_ddp(rank: int, world_size: int, *, compression: str, steps: int = 5, width: int = 64,
              square: bool = False, error_feedback: bool = True) -> dict:
    """DDP with a compression hook and SGD; the bytes of every step and the final weights."""
    import torch
    from torch.nn.parallel import DistributedDataParallel

    from parakit.engine import compression as comp

    module = square_model(width) if square else tiny_model(width)
    initial = flat_params(module)
    model = DistributedDataParallel(module)
    counter = comp.register(model, compression, error_feedback=error_feedback)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    per_step = []
    for step in range(steps):
        sgd_step(model, optimizer, batch(module, rank, step))
        taken = counter.take_step()
        per_step.append((taken.comm_bytes, taken.uncompressed_bytes))
    return {
        "steps": per_step,
        "grad_bytes": grad_bytes(module),
        "initial": initial,
        "params": flat_params(module),
        "numels": [p.numel() for p in module.parameters()],
        "total_comm_bytes": counter.total_comm_bytes,
    }


def _local_grads(module, x, y):
    """This rank's own gradient, through the bare module: DDP's hooks do not run."""
    import torch

    loss = torch.nn.functional.mse_loss(module(x), y)
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, list(module.parameters()))])


def sparse_residual(rank: int, world_size: int, *, kind: str, error_feedback: bool,
                    repeats: int = 3, ratio: float = 0.05) -> dict:
    """The same batch backward ``repeats`` times, no optimizer step, through a sparse hook.

    Returns the sum of the gradients DDP applied, the true averaged gradient and the ranks'
    averaged residual: with error feedback, applied + residual == repeats * true (telescoping).
    """
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from parakit.engine.compression import HOOKS
    from parakit.engine.compression.counting import HookSetup, WireCounter
    from parakit.config.levers import Compression

    module = tiny_model(64)
    x, y = batch(module, rank, 0)
    true = _local_grads(module, x, y)
    dist.all_reduce(true)
    true /= world_size
    compression = Compression.parse(f"{kind}:{ratio}")
    setup = HookSetup(group=dist.group.WORLD, counter=WireCounter(), error_feedback=error_feedback,
                      seed=0, powersgd_start_iter=2)
    state, hook = HOOKS[compression.kind](compression, setup)
    model = DistributedDataParallel(module)
    model.register_comm_hook(state, hook)
    applied, first = torch.zeros_like(true), None
    for _ in range(repeats):
        model.zero_grad(set_to_none=True)
        torch.nn.functional.mse_loss(model(x), y).backward()
        grads = torch.cat([p.grad.reshape(-1) for p in module.parameters()])
        first = grads.clone() if first is None else first
        applied += grads
    residual = torch.cat([
        state.residuals[p].reshape(-1) if p in state.residuals else torch.zeros(p.numel())
        for p in module.parameters()
    ])
    dist.all_reduce(residual)
    residual /= world_size
    return {
        "applied": applied.numpy().copy(),
        "first": first.numpy().copy(),
        "true": true.numpy().copy(),
        "residual": residual.numpy().copy(),
        "local": _local_grads(module, x, y).numpy().copy(),
    }


def local_sgd(rank: int, world_size: int, *, every: int, global_steps: int, steps: int) -> dict:
    """Local SGD with SGD steps; per step: averaged?, weights digest, bytes sent."""
    import torch
    from torch.nn.parallel import DistributedDataParallel

    from parakit.engine.local_sgd import LocalSGD

    module = tiny_model(64)
    model = DistributedDataParallel(module)
    local = LocalSGD(model, every, global_steps=global_steps)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    per_step = []
    for step in range(steps):
        sgd_step(model, optimizer, batch(module, rank, step))
        averaged = local.after_step(model.parameters())
        taken = local.counter.take_step()
        per_step.append((averaged, digest(module), taken.comm_bytes, taken.uncompressed_bytes))
    return {"steps": per_step, "param_bytes": grad_bytes(module)}


def comm_bench(rank: int, world_size: int, options: dict) -> dict:
    """The communication benchmark on this group with ``options``, the progress messages it
    sent, and its wall time."""
    import time

    from parakit.engine.commbench import run_comm_bench

    progress: list[dict] = []
    start = time.perf_counter()
    result = run_comm_bench(on_progress=progress.append, **options)
    return {"result": result, "progress": progress, "wall_s": time.perf_counter() - start}


def delayed_sgd(rank: int, world_size: int, *, delay: int, steps: int, lr: float = 0.1) -> list[dict]:
    """Delayed averaging with plain SGD; per step: this rank's parameters after the step, its
    own gradient of the step, and the bytes it sent."""
    import torch
    from torch.nn.parallel import DistributedDataParallel

    from parakit.engine.delayed import DelayedAveraging

    module = tiny_model(16)
    model = DistributedDataParallel(module)
    delayed = DelayedAveraging(model, delay, steps=steps)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    per_step = []
    for step in range(steps):
        x, y = batch(module, rank, step)
        local = _local_grads(module, x, y)
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.mse_loss(model(x), y).backward()
        delayed.before_step()
        optimizer.step()
        delayed.after_step()
        per_step.append({"params": flat_params(module), "local": local.numpy().copy(),
                         "sent": delayed.counter.take_step().comm_bytes, "grad_bytes": grad_bytes(module)})
    return per_step
