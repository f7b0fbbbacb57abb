"""The GPUs a process may use, found through NVML, which does not create a CUDA context: the
notebook's process and an engine before pinning both ask this way."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Gpu:
    index: int
    """NVML (physical) index, as nvidia-smi shows it."""
    uuid: str
    """Pinning uses the UUID: CUDA_VISIBLE_DEVICES and CUDA's device order renumber indices."""


def visible_gpus() -> tuple[list[Gpu], str | None]:
    """GPUs this process may use, honouring CUDA_VISIBLE_DEVICES; or [] and the reason."""
    if not torch_has_cuda():
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


def torch_has_cuda() -> bool:
    """Whether the installed torch is built with CUDA, answered without importing torch where it
    is not imported yet (a second or two): the notebook checks settings before any engine, and
    torch's CUDA builds ship libtorch_cuda beside libtorch, CPU builds do not."""
    import sys

    if "torch" in sys.modules:
        return sys.modules["torch"].backends.cuda.is_built()
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("torch")
    if spec is None or spec.origin is None:
        return False
    return any((Path(spec.origin).parent / "lib").glob("libtorch_cuda*"))


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
