"""What an engine says about itself, and what the session says about its engines: the records
that travel back from ``engine/network.py`` and ``engine/devices.py`` through ipyparallel
(pickled), and the rows of ``Session.status()``. Here, in records, because the engine side
makes the first two and the cluster side reads them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class EngineIdentity:
    """Where an engine runs, as it sees itself (``engine.network.identify``), before the
    cluster places it among the hosts (``cluster.placement.EngineInfo`` adds that)."""

    hostname: str
    """The host's name (socket.gethostname)."""
    netns: str
    """The engine's network namespace as an inode number ('-' where there is no /proc): two
    namespaces of one machine are two hosts to the network."""
    netns_name: str | None
    """The name ``ip netns`` gave that namespace; None where it has none."""
    local_hint: int | None
    """The engine's local rank on its host as its launcher (MPI, Slurm) set it in the
    environment; None where no launcher did (local engines)."""
    cpu_count: int
    """The cores the engine may use: its CPU affinity, else the machine's count."""
    pid: int
    """The engine's process id, on its own host."""

    @property
    def host_key(self) -> str:
        """hostname|netns: one per host, as the cluster tells hosts apart."""
        return f"{self.hostname}|{self.netns}"


@dataclass(frozen=True, kw_only=True)
class PinnedDevice:
    """The device an engine was pinned to (``engine.devices.pin``), as the engine reports it."""

    pid: int
    """The engine's process id, on its own host."""
    host: str
    """The engine's hostname."""
    gpu_index: int | None
    """The physical (NVML) index of its GPU; None on a CPU."""
    gpu_uuid: str | None
    """The UUID of its GPU (CUDA_VISIBLE_DEVICES names it so); None on a CPU."""
    device: str
    """The torch device it trains on: 'cpu', or 'cuda:0' (its one visible GPU)."""
    device_name: str
    """The device's model name, e.g. 'NVIDIA H100 80GB HBM3', or the CPU's."""
    threads: int
    """torch's intra-op thread count it was set to."""


@dataclass(frozen=True, kw_only=True)
class EngineStatus:
    """One engine as ``Session.status()`` shows it, read from what the session already knows:
    it asks no engine anything, so it answers during a run too."""

    rank: int
    """Its rank in a run over every engine."""
    engine_id: int
    """The controller's id of the engine."""
    host: str
    """The host it runs on (with the namespace where one machine holds two hosts)."""
    local_rank: int
    """Its place among its host's engines."""
    pid: int
    """Its process id, on its own host."""
    alive: bool
    """Its process runs and the controller still has it registered."""
    device: str
    """The torch device it trains on: 'cpu' or 'cuda:0'."""
    device_name: str
    """The device's model name."""
    threads: int
    """torch threads: its share of its host's cores."""
    in_group: bool
    """It is a member of the process group formed now."""
    backend: str | None
    """That group's backend ('gloo', 'nccl'); None when the engine is in no group."""
    rss_bytes: int | None
    """Resident memory of its process now; None where it cannot be read (``memory_reason``)."""
    peak_rss_bytes: int | None
    """The most resident memory its process has held; None where it cannot be read."""
    memory_reason: str | None = None
    """Why rss_bytes and peak_rss_bytes are None; None when they were read."""
    gpu_index: int | None = None
    """The physical GPU it is pinned to (every GPU engine sees its own as cuda:0, so engines
    that share a GPU show the same index here); None on a CPU."""
