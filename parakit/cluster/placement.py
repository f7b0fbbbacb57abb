"""Which device each engine gets, which backend a run uses, and how many engines fit.

Everything here runs in the notebook's process and never initialises CUDA there: GPUs are
found through NVML, which does not create a CUDA context.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field, replace

from parakit.config.run import Device, RunConfig, Strategy
from parakit.engine.gpus import Gpu, filter_visible, visible_gpus
from parakit.records.engine_facts import EngineIdentity
from parakit.config.hosts import usable_cores

__all__ = ["ENGINES_PER_CORE", "ENGINE_MEMORY_BYTES", "EngineInfo", "Gpu", "HostFacts", "check_gpu_sharing",
           "check_workers", "choose_backend", "choose_gpus", "filter_visible", "gpu_for_engine", "host_facts",
           "max_workers", "place_on_hosts", "ranks_for", "share_cores", "visible_gpus"]

ENGINES_PER_CORE = 4  # beyond this, CPU engines only wait for each other
ENGINE_MEMORY_BYTES = 768 * 2**20  # an engine with torch imported and a small model


@dataclass(frozen=True)
class HostFacts:
    cpu_count: int
    memory_bytes: int
    gpus: list[Gpu] = field(default_factory=list)
    no_gpu_reason: str | None = None


def host_facts() -> HostFacts:
    gpus, reason = visible_gpus()
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return HostFacts(usable_cores(), memory, gpus, reason)


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


def check_gpu_sharing(config: RunConfig, gpus: list[Gpu]) -> None:
    """Refuse a pipeline, or context parallelism's ring, on ranks that would share a GPU (local
    engines: rank i on GPU i % G). Such ranks use gloo, whose TCP transport cannot send CUDA
    memory ("Bad address"), and a pipeline's stages send activations point to point, as the
    ring sends keys and values; ddp, fsdp, tensor and expert only use collectives, which gloo
    stages through the host."""
    ring = config.strategy is Strategy.CONTEXT
    if not gpus or not (config.uses_pipeline or ring) or config.workers <= len(gpus):
        return
    what = "context parallelism's ring" if ring else "a pipeline"
    raise ValueError(
        f"{what} on {config.workers} ranks sharing {len(gpus)} GPU(s) cannot run: ranks on one GPU use gloo, "
        f"which cannot send CUDA memory between them; use at most {len(gpus)} worker(s) for it, "
        "another strategy, or device='cpu'")


@dataclass(frozen=True, kw_only=True)
class EngineInfo:
    """What the notebook knows of one engine: where it runs, where it sits among the engines,
    and the device it is pinned to. Replaced (``dataclasses.replace``), never changed in place:
    ``place_on_hosts`` places it, ``EngineSet`` pins it."""

    engine_id: int
    """The controller's id of the engine."""
    pid: int
    """The engine's process id, on its own host."""
    hostname: str
    """The host's name, as the engine sees it."""
    netns: str
    """The engine's network namespace (an inode number): two namespaces of a machine are two hosts."""
    netns_name: str | None
    """The namespace's name (``ip netns``), where it has one."""
    local_hint: int | None
    """The engine's local rank on its host, where its launcher (MPI, Slurm) gave one."""
    cpu_count: int
    """The cores the engine may use (its affinity)."""
    # -- from place_on_hosts
    host_key: str = ""
    """hostname|netns: one per host."""
    host: str = ""
    """The host's name to show: the hostname, with the namespace where one machine holds two."""
    host_index: int = 0
    """The host's place among the hosts, this process's host first."""
    local_index: int = 0
    """The engine's place among its host's engines."""
    # -- from pinning
    threads: int = 1
    """torch threads: the engine's share of its host's cores."""
    gpu_index: int | None = None
    """The physical GPU index the engine is pinned to; None on a CPU."""
    gpu_uuid: str | None = None
    """The UUID of that GPU; None on a CPU."""
    device: str = "cpu"
    """The torch device the engine trains on: 'cpu', or 'cuda:0' (its one visible GPU)."""
    device_name: str = ""
    """The device's model name, e.g. 'NVIDIA H100 80GB HBM3' or the CPU's."""
    stack_file: str = ""
    """Where the engine writes its thread stacks on SIGUSR1 (the hang watch reads them)."""

    @classmethod
    def identified(cls, engine_id: int, me: EngineIdentity) -> EngineInfo:
        """A new engine as it identified itself (``engine.network.identify``), not yet placed."""
        return cls(engine_id=engine_id, pid=me.pid, hostname=me.hostname, netns=me.netns,
                   netns_name=me.netns_name, local_hint=me.local_hint, cpu_count=me.cpu_count)

    @property
    def gpu(self) -> Gpu | None:
        """The GPU the engine is pinned to, or None."""
        return Gpu(self.gpu_index, self.gpu_uuid) if self.gpu_uuid else None


def place_on_hosts(engines: list[EngineInfo], own_host: str | None = None) -> list[EngineInfo]:
    """The engines, in the same order, each given its ``host_key``, ``host`` (a name to show),
    ``host_index`` and ``local_index``.

    Hosts come in the order their first engine registered, this process's host first (a local
    session's engines, the first host of a link); on a host, engines follow the launcher's
    local rank (MPI, Slurm) where it gave one, else their engine id."""
    keys: list[str] = []
    for e in sorted(engines, key=lambda e: e.engine_id):
        key = f"{e.hostname}|{e.netns}"
        if key not in keys:
            keys.append(key)
    if own_host in keys:
        keys.remove(own_host)
        keys.insert(0, own_host)
    names = [k.split("|")[0] for k in keys]
    placed = []
    for e in engines:
        key = f"{e.hostname}|{e.netns}"
        # Two namespaces of one machine are two hosts: tell them apart by the namespace's name.
        plain = names.count(e.hostname) == 1 or key == own_host
        host = e.hostname if plain else f"{e.hostname}/{e.netns_name or 'netns ' + e.netns}"
        placed.append(replace(e, host_key=key, host=host, host_index=keys.index(key)))
    for key in keys:
        on_host = sorted((p for p, e in enumerate(placed) if e.host_key == key),
                         key=lambda p: (placed[p].local_hint is None, placed[p].local_hint or 0, placed[p].engine_id))
        for local, p in enumerate(on_host):
            placed[p] = replace(placed[p], local_index=local)
    return placed


def share_cores(engines: list[EngineInfo], one_machine: bool) -> list[EngineInfo]:
    """Threads per engine: its share of its machine's cores, so one worker means a fixed slice of
    the machine and adding workers adds hardware, as adding GPUs would. ``one_machine``: every
    engine shares this one (local engines, a link's hosts included), whatever host it names."""

    def machine(e: EngineInfo) -> str:
        return "here" if one_machine else e.host_key

    per_machine = Counter(machine(e) for e in engines)
    return [replace(e, threads=max(1, e.cpu_count // per_machine[machine(e)])) for e in engines]


def ranks_for(engines: list[EngineInfo], world: int) -> list[int]:
    """Positions (in ``engines``) of the engines a run of ``world`` ranks uses, in rank order.

    Ranks are ordered by host, then local index, as torchrun orders them (neighbouring ranks
    share a host, which tensor parallelism and ring collectives want). A run with fewer ranks
    than engines takes them evenly from every host, so that every run crosses the network
    between hosts, the thing a multi-host session is for; on one host this is simply the first
    ``world`` engines."""
    if world > len(engines):
        raise ValueError(f"{world} ranks asked for, but there are {len(engines)} engines")
    spread = sorted(range(len(engines)), key=lambda i: (engines[i].local_index, engines[i].host_index))
    chosen = spread[:world]
    return sorted(chosen, key=lambda i: (engines[i].host_index, engines[i].local_index))
