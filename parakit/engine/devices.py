"""Pin an engine to its device, and read its memory figures.

Pinning sets CUDA_VISIBLE_DEVICES, which CUDA reads once, when it initialises. So it must run
before torch touches CUDA in this process; ``pin`` checks that and refuses otherwise.
"""

from __future__ import annotations

import os
import platform
import socket
import sys

from parakit.engine.gpus import Gpu, visible_gpus
from parakit.engine.state import STATE
from parakit.records.engine_facts import PinnedDevice


def pin(gpu: Gpu | None, threads: int) -> PinnedDevice:
    """Pin this engine to one GPU, named by UUID (or to the CPU with None), and set its thread
    count. Returns what it was pinned to."""
    if "torch" in sys.modules:  # imported already, or being imported (engine.preload): wait for it
        import torch

        if torch.cuda.is_initialized():
            raise RuntimeError("CUDA was initialised in this engine before parakit could pin it")
    gpu_uuid = gpu.uuid if gpu is not None else None
    # A CPU engine hides every GPU, so nothing in it can start a CUDA context by accident.
    os.environ["CUDA_VISIBLE_DEVICES"] = gpu_uuid or ""
    import torch

    torch.set_num_threads(threads)
    STATE.gpu_uuid, STATE.pinned = gpu_uuid, True
    return PinnedDevice(pid=os.getpid(), host=socket.gethostname(), gpu_index=gpu.index if gpu is not None else None,
                        gpu_uuid=gpu_uuid, device=str(device()), device_name=device_name(), threads=threads)


def pin_on_host(device: str, gpu_indices: list[int] | None, local_index: int, threads: int) -> PinnedDevice:
    """Pin this engine to the GPU of its local rank among its own host's GPUs (engines on
    other hosts: the notebook cannot see their GPUs). ``device`` and ``gpu_indices`` mean what
    they mean to a Session: "cpu", "cuda" or "auto"; physical GPU indices, or all."""
    gpus, reason = ([], "device cpu was asked for") if device == "cpu" else visible_gpus()
    if gpu_indices is not None and device != "cpu":
        gpus = [g for g in gpus if g.index in gpu_indices]
    if device == "cuda" and not gpus:
        raise RuntimeError(f"device cuda was asked for, but on {socket.gethostname()} {reason or 'gpus= names none'}")
    return pin(gpus[local_index % len(gpus)] if gpus else None, threads)


def device():
    import torch

    return torch.device("cuda", 0) if STATE.gpu_uuid is not None else torch.device("cpu")


def device_name() -> str:
    import torch

    if STATE.gpu_uuid is not None:
        return torch.cuda.get_device_name(0)
    return cpu_name()


def cpu_name() -> str:
    """The CPU's model name, e.g. 'AMD EPYC' (the benchmarks name their machine with it too)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def reset_peak_memory() -> tuple[str | None, str | None]:
    """Start a peak-memory window. Returns (kind, reason it cannot be measured)."""
    import torch

    if STATE.gpu_uuid is not None:
        torch.cuda.reset_peak_memory_stats()
        return "cuda_max_allocated", None
    # Writing 5 to clear_refs resets the kernel's peak-RSS mark (VmHWM) for this process,
    # so a reused engine reports this run's peak, not the largest of all its runs.
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return "process_peak_rss", None
    except OSError as e:
        return None, f"cannot reset the process peak RSS on this OS: {e}"


def limit_memory(limit_bytes: int | None) -> None:
    """On a GPU, cap what this process may allocate at ``limit_bytes`` (None: the whole GPU),
    so a run over a memory limit fails with a real out-of-memory (``Session.fit``). Set at the
    start of every run, so a limit never outlives the run that asked for it. CPUs: nothing to set."""
    import torch

    if STATE.gpu_uuid is None:
        return
    total = torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory
    fraction = 1.0 if limit_bytes is None else min(1.0, limit_bytes / total)
    torch.cuda.set_per_process_memory_fraction(fraction)


def peak_memory_bytes(kind: str | None) -> int | None:
    import torch

    if kind == "cuda_max_allocated":
        return int(torch.cuda.max_memory_allocated())
    if kind == "process_peak_rss":
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    return None
