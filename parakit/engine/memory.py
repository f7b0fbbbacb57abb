"""Memory per rank, broken down: the bytes of gradients and of activations (what forward saves
for backward) beside the parameters and optimizer state the loop reports, and on a GPU what
the caching allocator reserved against what it handed out.

Activations are counted with ``torch.autograd.graph.saved_tensors_hooks``: every tensor an
operation saves for backward passes through ``SavedBytes.pack``, which notes its storage and
hands autograd a detached alias of it (the same storage: counting keeps nothing alive that
autograd would not). A storage saved twice, or through several views, counts once; when
autograd releases the last tensor saved from a storage (backward has used it) its bytes leave
the count. So the figure is the most bytes held for backward at once, which is right where
forward and backward interleave too: a pipeline's micro-batches (1F1B frees the first one's
activations before the last one's forward), accumulation's micro-steps.

What is not an activation: parameters (and views of them, like the transposed weight a matmul
saves) are counted in ``param_bytes``; fsdp's gathered parameters are parameters too. What is:
the batch a first layer saves, autocast's low-precision copies of weights (held for backward),
and the block inputs that activation checkpointing keeps to recompute from (it saves them
through these hooks before its own take over inside the block; what it recomputes during
backward is transient and not counted).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import nn

from parakit.engine.memory_snapshot import MemorySnapshot
from parakit.engine.optimizer import local_bytes

NO_ALLOCATOR = "CPU: no caching allocator (reserved and allocated bytes are the CUDA allocator's figures)"


class _Saved:
    """What autograd keeps instead of a saved tensor: the tensor (a detached alias) and the
    storage it was counted under; released when autograd lets go of it."""

    __slots__ = ("tensor", "key", "counter")

    def __init__(self, tensor: torch.Tensor, key: tuple, counter: "SavedBytes"):
        self.tensor, self.key, self.counter = tensor, key, counter

    def __del__(self) -> None:
        self.counter.release(self.key)


class SavedBytes:
    """The bytes saved for backward while its hooks are on: ``live`` now, ``peak_bytes`` the
    most at once, ``tensors`` how many saved tensors passed through, ``cost_s`` the time the
    pack hook took (what counting adds to the step it counts)."""

    def __init__(self) -> None:
        self.live = 0
        self.peak_bytes = 0
        self.tensors = 0
        self.cost_s = 0.0
        self._refs: dict[tuple, int] = {}  # storage -> saved tensors from it autograd still holds

    def hooks(self) -> torch.autograd.graph.saved_tensors_hooks:
        return torch.autograd.graph.saved_tensors_hooks(self.pack, _unpack)

    def pack(self, tensor: torch.Tensor) -> Any:
        started = time.perf_counter()
        self.tensors += 1
        alias = tensor.detach()  # autograd's docs: a packed value must not hold its input (a cycle)
        base = tensor._base if tensor._base is not None else tensor
        if isinstance(base, nn.Parameter):
            self.cost_s += time.perf_counter() - started
            return alias
        key = storage_key(tensor)
        held = self._refs.get(key, 0)
        if not held:
            self.live += key[1]
            self.peak_bytes = max(self.peak_bytes, self.live)
        self._refs[key] = held + 1
        saved = _Saved(alias, key, self)
        self.cost_s += time.perf_counter() - started
        return saved

    def release(self, key: tuple) -> None:
        held = self._refs.pop(key) - 1
        if held:
            self._refs[key] = held
        else:
            self.live -= key[1]


def _unpack(packed: Any) -> torch.Tensor:
    return packed.tensor if type(packed) is _Saved else packed


def storage_key(tensor: torch.Tensor) -> tuple:
    """(where, bytes) of the storage this rank holds for ``tensor``: a DTensor's local shard;
    a tensor with no storage to read (a sparse or other subclass tensor) by itself, its own
    bytes."""
    local = getattr(tensor, "_local_tensor", tensor)  # DTensor: this rank's shard (no autograd op)
    try:
        storage = local.untyped_storage()
        return storage.data_ptr(), storage.nbytes()
    except (RuntimeError, NotImplementedError, TypeError):
        return ("tensor", id(local)), local.numel() * local.element_size()


def counted_step(steps: int, warmup_steps: int) -> int:
    """The step whose activations are counted: the last warm-up step. Its time is left out of
    every summary, so the hooks (a Python call per saved tensor, ~2 µs) cost the measured
    steps nothing, and it runs the forward every later step runs (two warm-up steps by
    default: the first one's one-off work, compiling and lazy initialisation, is done). With
    no warm-up, the first step, which then carries that cost."""
    return max(0, min(warmup_steps, steps) - 1)


class MemoryCount:
    """One run's memory instrument on this rank: counts activations on ``step``, records the
    allocator's history when a snapshot is asked for, and reads the rest at the run's end."""

    def __init__(self, device: torch.device, steps: int, warmup_steps: int, snapshot: bool = False,
                 uncountable: str | None = None):
        self.device = device
        self.uncountable = uncountable
        """Why the saved bytes cannot be counted in this run (the count is then not kept)."""
        self.step = counted_step(steps, warmup_steps)
        self.saved = SavedBytes()
        self.counted = False
        self.snapshot = MemorySnapshot(device) if snapshot else None  # records from here on

    @contextlib.contextmanager
    def counting(self, step: int) -> Iterator[None]:
        """Wrap one step's forward and backward; counts on the planned step only."""
        if step != self.step:
            yield
            return
        with self.saved.hooks():
            yield
        self.counted = True

    def measures(self, parameters: Iterable[torch.Tensor], failed: bool) -> dict[str, Any]:
        """The memory figures of this rank for its RankReport, after the steps (their reading
        costs the run's end, not a step); a figure not measured is None, and
        ``memory_unmeasured`` says why."""
        why: dict[str, str] = {}
        grads, why_not = gradient_bytes(parameters, failed)
        if why_not:
            why["gradient_bytes"] = why_not
        if self.uncountable:
            why["activation_bytes"] = self.uncountable
        elif not self.counted:
            why["activation_bytes"] = f"the run ended before step {self.step}, the step activations are counted on"
        allocator = allocator_figures(self.device)
        if allocator["reserved_peak_bytes"] is None:
            why.update(dict.fromkeys(("allocated_peak_bytes", "reserved_peak_bytes", "fragmentation"), NO_ALLOCATOR))
        elif allocator["fragmentation"] is None:
            why["fragmentation"] = "the allocator reserved nothing during the run"
        snapshot = None
        if self.snapshot is not None:
            snapshot, why_not = self.snapshot.finish()
            if why_not:
                why["memory_snapshot"] = why_not
        return {
            "gradient_bytes": grads,
            "activation_bytes": self.saved.peak_bytes if self.counted and not self.uncountable else None,
            "activation_step": self.step if self.counted else None,
            "activation_count_s": self.saved.cost_s if self.counted else None,
            **allocator,
            "memory_snapshot": snapshot,
            "memory_unmeasured": why or None,
        }


def gradient_bytes(parameters: Iterable[torch.Tensor], failed: bool) -> tuple[int | None, str | None]:
    """Bytes of gradients this rank holds after the last step (a DTensor's local shard). Read at
    the run's end: the loop zeroes them (set to None) only at the start of the next step."""
    if failed:
        return None, "the run failed: the gradients it left are not those of a completed step"
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return None, "no parameter held a gradient after the last step"
    return local_bytes(grads), None


def allocator_figures(device: torch.device) -> dict[str, Any]:
    """The CUDA caching allocator's peaks since the run's start (``devices.reset_peak_memory``):
    bytes handed to tensors, bytes reserved from the device, and the share reserved but not
    handed out. Reserved memory only grows (parakit never empties the cache), so the reserved
    peak is what was reserved when the allocated peak was reached: 1 - allocated / reserved is
    the fragmentation at the peak. None on a CPU (``NO_ALLOCATOR``)."""
    if device.type != "cuda":
        return {"allocated_peak_bytes": None, "reserved_peak_bytes": None, "fragmentation": None}
    allocated = int(torch.cuda.max_memory_allocated(device))
    reserved = int(torch.cuda.max_memory_reserved(device))
    return {"allocated_peak_bytes": allocated, "reserved_peak_bytes": reserved,
            "fragmentation": 1 - allocated / reserved if reserved else None}


# Selective checkpointing keeps the matmuls' outputs in torch.utils.checkpoint's own cache, not
# through autograd's saved-tensor hooks, which see only what lies outside the blocks: a count
# would be far too low (it equalled full checkpointing's), so there is none.
SELECTIVE_UNCOUNTABLE = ("selective activation checkpointing keeps the matmuls' outputs inside "
                         "torch.utils.checkpoint, where saved_tensors_hooks cannot count them")
