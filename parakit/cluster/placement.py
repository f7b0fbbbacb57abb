"""Which device each engine gets, which backend a run uses, and how many engines fit.

Everything here runs in the notebook's process and never initialises CUDA there: GPUs are
found through NVML, which does not create a CUDA context.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from parakit.config import Device

ENGINES_PER_CORE = 4  # beyond this, CPU engines only wait for each other
ENGINE_MEMORY_BYTES = 768 * 2**20  # an engine with torch imported and a small model


@dataclass(frozen=True)
class Gpu:
    index: int
    """NVML (physical) index, as nvidia-smi shows it."""
    uuid: str
    """Pinning uses the UUID: CUDA_VISIBLE_DEVICES and CUDA's device order renumber indices."""


@dataclass(frozen=True)
class HostFacts:
    cpu_count: int
    memory_bytes: int
    gpus: list[Gpu] = field(default_factory=list)
    no_gpu_reason: str | None = None


def visible_gpus() -> tuple[list[Gpu], str | None]:
    """GPUs this process may use, honouring CUDA_VISIBLE_DEVICES; or [] and the reason."""
    import torch

    if not torch.backends.cuda.is_built():
        return [], "this torch is a CPU build"
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception as e:  # noqa: BLE001 - any NVML failure means: no usable NVIDIA GPU
        return [], f"NVML is not available ({e})"
    try:
        gpus = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            uuid = pynvml.nvmlDeviceGetUUID(pynvml.nvmlDeviceGetHandleByIndex(i))
            gpus.append(Gpu(i, uuid.decode() if isinstance(uuid, bytes) else uuid))
    finally:
        pynvml.nvmlShutdown()
    gpus = filter_visible(gpus, os.environ.get("CUDA_VISIBLE_DEVICES"))
    return gpus, None if gpus else "no GPU is visible (NVML found none, or CUDA_VISIBLE_DEVICES hides them)"


def filter_visible(gpus: list[Gpu], cuda_visible: str | None) -> list[Gpu]:
    """Apply CUDA_VISIBLE_DEVICES (indices or UUID prefixes) the way CUDA does: in its order,
    stopping at the first entry that names no device."""
    if cuda_visible is None:
        return gpus
    chosen = []
    for entry in (e.strip() for e in cuda_visible.split(",")):
        match = [g for g in gpus if entry and (entry == str(g.index) or g.uuid.startswith(entry))]
        if len(match) != 1:
            break
        chosen.append(match[0])
    return chosen


def host_facts() -> HostFacts:
    gpus, reason = visible_gpus()
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return HostFacts(os.cpu_count() or 1, memory, gpus, reason)


def max_workers(facts: HostFacts) -> int:
    by_cpu = ENGINES_PER_CORE * facts.cpu_count
    by_memory = facts.memory_bytes // ENGINE_MEMORY_BYTES
    return max(1, min(by_cpu, by_memory))


def check_workers(workers: int, facts: HostFacts) -> None:
    limit = max_workers(facts)
    if workers > limit:
        raise ValueError(
            f"workers={workers} is more than this machine can hold ({limit}: {ENGINES_PER_CORE} "
            f"per core on {facts.cpu_count} cores, {ENGINE_MEMORY_BYTES >> 20} MiB each); "
            f"use workers <= {limit}"
        )


def choose_gpus(device: Device, gpus: list[int] | None, facts: HostFacts) -> list[Gpu]:
    """The GPUs engines are pinned to, round robin; [] means CPU engines."""
    device = Device.parse(device, "device")
    if device is Device.CPU:
        if gpus:
            raise ValueError("gpus= was given with device='cpu'; drop one of them")
        return []
    if not facts.gpus:
        if device is Device.CUDA:
            raise ValueError(f"device cuda was asked for, but {facts.no_gpu_reason}; use device cpu or auto")
        if gpus:
            raise ValueError(f"gpus={list(gpus)} was given, but no GPU is visible ({facts.no_gpu_reason}); drop gpus")
        return []
    if gpus is None:
        return list(facts.gpus)
    by_index = {g.index: g for g in facts.gpus}
    missing = [i for i in gpus if i not in by_index]
    if missing or not gpus:
        raise ValueError(
            f"gpus={list(gpus)} names GPUs that are not visible; visible: {sorted(by_index)}"
        )
    return [by_index[i] for i in gpus]


def gpu_for_engine(i: int, gpus: list[Gpu]) -> Gpu | None:
    """Engine i gets GPU i % G."""
    return gpus[i % len(gpus)] if gpus else None


def choose_backend(ranks_gpus: list[Gpu | None], nccl_available: bool) -> tuple[str, str | None]:
    """nccl when every rank has a GPU of its own, else gloo; plus a warning when GPUs are shared."""
    on_gpu = [g for g in ranks_gpus if g is not None]
    shared = len(on_gpu) != len({g.uuid for g in on_gpu})
    if on_gpu and not shared and len(on_gpu) == len(ranks_gpus) and nccl_available:
        return "nccl", None
    if shared:
        return "gloo", (
            f"{len(ranks_gpus)} ranks share {len({g.uuid for g in on_gpu})} GPU(s), so they use gloo "
            "and compete for the same GPU: speed-ups are not representative"
        )
    return "gloo", None
