"""The machines a notebook's dry run is checked against (``parakit preflight --machine NAME``):
what the preflight asks of a machine, faked where it asks. It sits beside the preflight because
it answers the preflight's own questions, and changes when they do.

The preflight learns about a machine in three places only: ``placement.host_facts`` (cores,
memory, the GPUs NVML lists), ``preflight.gpu_capabilities`` (each GPU's name and compute
capability, from NVML) and ``preflight.torchao_installed``. ``faked`` answers those three for a
``Machine``, so every check runs as it would there, on a machine with no GPU. A link between
two hosts (``link=``) is refused on every machine: a dry run makes no network namespace.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from unittest import mock

from parakit.cluster import netns, placement
from parakit.cluster.placement import Gpu
from parakit.session import preflight

GIB = 2**30


@dataclass(frozen=True, kw_only=True)
class Machine:
    """One machine as the preflight sees it."""

    name: str
    """What ``--machine`` takes."""
    cores: int
    """Cores the engines may use."""
    memory_bytes: int
    """The machine's memory."""
    gpu_name: str | None = None
    """Every GPU's product name, as NVML says it; None: no GPU."""
    gpu_count: int = 0
    """GPUs NVML lists."""
    capability: tuple[int, int] | None = None
    """Their compute capability (fp8 needs 8.9 or later)."""
    fp8_installed: bool = False
    """torchao importable (``pip install 'parakit[fp8]'``): assumed wherever there are GPUs, so
    fp8 is refused there only for what the GPU or the run's settings lack."""

    def host_facts(self) -> placement.HostFacts:
        gpus = [Gpu(i, f"GPU-dry-run-{self.name}-{i}") for i in range(self.gpu_count)]
        reason = None if gpus else "NVML is not available (a CPU machine)"
        return placement.HostFacts(self.cores, self.memory_bytes, gpus, reason)

    def gpu_capabilities(self, gpus: list[Gpu]) -> list[tuple[str, tuple[int, int]]]:
        return [(self.gpu_name, self.capability) for _ in gpus]

    def describe(self) -> str:
        """The machine in one line, e.g. '8x NVIDIA H100 80GB HBM3 (compute capability 9.0), 208 cores, 1872 GiB'."""
        memory = f"{self.cores} cores, {self.memory_bytes // GIB} GiB"
        if not self.gpu_count:
            return f"no GPU, {memory}"
        major, minor = self.capability
        return f"{self.gpu_count}x {self.gpu_name} (compute capability {major}.{minor}), {memory}"


# Real machines, with the cores and memory their cloud instances have.
MACHINES = {m.name: m for m in (
    Machine(name="cpu", cores=2, memory_bytes=8 * GIB),  # the 2-core CPU the notebooks are sized for
    Machine(name="1xgpu", cores=8, memory_bytes=32 * GIB, gpu_name="NVIDIA L4", gpu_count=1,
            capability=(8, 9), fp8_installed=True),  # GCP g2-standard-8
    Machine(name="2xgpu", cores=24, memory_bytes=170 * GIB, gpu_name="NVIDIA A100-SXM4-40GB", gpu_count=2,
            capability=(8, 0), fp8_installed=True),  # GCP a2-highgpu-2g
    Machine(name="8xh100", cores=208, memory_bytes=1872 * GIB, gpu_name="NVIDIA H100 80GB HBM3", gpu_count=8,
            capability=(9, 0), fp8_installed=True),  # GCP a3-highgpu-8g
    Machine(name="old-gpu", cores=8, memory_bytes=61 * GIB, gpu_name="Tesla V100-SXM2-16GB", gpu_count=1,
            capability=(7, 0), fp8_installed=True),  # AWS p3.2xlarge: before fp8's 8.9
)}


def machine_named(name: str) -> Machine:
    """The machine called ``name``; ValueError listing the machines otherwise."""
    if name not in MACHINES:
        raise ValueError(f"no machine {name!r}; the machines are: {', '.join(MACHINES)}")
    return MACHINES[name]


@contextlib.contextmanager
def faked(machine: Machine) -> Iterator[Machine]:
    """The preflight sees ``machine`` inside the block (see the module's doc); restored after."""
    answers = [
        (placement, "host_facts", machine.host_facts),
        (preflight, "gpu_capabilities", machine.gpu_capabilities),
        (preflight, "torchao_installed", lambda: machine.fp8_installed),
        (netns, "why_not", lambda link=None: "a dry run makes no network namespace; on a real machine a link "
                                             "needs root, ip and tc"),
    ]
    with contextlib.ExitStack() as stack:
        for module, name, answer in answers:
            stack.enter_context(mock.patch.object(module, name, answer))
        yield machine
