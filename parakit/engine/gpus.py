"""The GPUs a process may use, found through NVML, which does not create a CUDA context: the
notebook's process and an engine before pinning both ask this way. NVML itself is opened and
closed in one place, ``NVML``, for the listing here and for the power meter alike."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class Gpu:
    index: int
    """NVML (physical) index, as nvidia-smi shows it."""
    uuid: str
    """Pinning uses the UUID: CUDA_VISIBLE_DEVICES and CUDA's device order renumber indices."""


class NvmlUnavailable(Exception):
    """NVML cannot be used here, so there is no usable NVIDIA GPU; the message says why."""


class NvmlSession:
    """The one owner of NVML's nvmlInit / nvmlShutdown in this process.

    NVML counts its nvmlInit calls and shuts down at the matching last nvmlShutdown, so two
    users that each init and shut down their own way can pull it from under each other. Here
    every use is counted once: the first user inits, the last one to give it back shuts down.
    ``visible_gpus`` opens it around one listing; a power meter keeps it open for the rest of
    the process (``keep_open``), so a listing while a meter samples costs no init and no
    shutdown.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()  # keep_open takes it, then acquire takes it again
        self._users = 0
        self._kept = False

    @property
    def users(self) -> int:
        """Uses open now, the power meters' process-long one included."""
        return self._users

    def acquire(self):
        """pynvml, initialised for one more user; give it back with ``release``.

        Raises:
            NvmlUnavailable: pynvml is not installed, or nvmlInit failed (no driver, no GPU).
        """
        try:
            import pynvml
        except ImportError as e:
            raise NvmlUnavailable(f"pynvml is not installed (pip install nvidia-ml-py): {e}") from None
        with self._lock:
            if self._users == 0:
                try:
                    pynvml.nvmlInit()
                except Exception as e:  # noqa: BLE001 - any NVML failure means: no usable NVIDIA GPU
                    raise NvmlUnavailable(f"NVML is not available ({e})") from None
            self._users += 1
        return pynvml

    def release(self) -> None:
        """Give back one use; the last one shuts NVML down."""
        with self._lock:
            if self._users == 0:
                raise RuntimeError("NvmlSession.release() without acquire()")
            self._users -= 1
            if self._users == 0:
                import pynvml

                pynvml.nvmlShutdown()

    @contextlib.contextmanager
    def opened(self) -> Iterator:
        """pynvml, initialised for the ``with`` block."""
        pynvml = self.acquire()
        try:
            yield pynvml
        finally:
            self.release()

    def keep_open(self):
        """pynvml, initialised for the rest of the process: the power meters' one use, taken
        however many meters ask. A meter is made per run and has no close, and nvmlInit can take
        a second on a many-GPU node. Never given back: the OS frees NVML at exit, while a
        shutdown at exit could pull it from under a daemon sampler thread still mid-read."""
        with self._lock:
            if self._kept:
                import pynvml

                return pynvml
            pynvml = self.acquire()  # a failure leaves nothing kept: the next meter tries again
            self._kept = True
            return pynvml


NVML = NvmlSession()
"""This process's NVML: one owner, as NVML's own count is one per process."""


def visible_gpus() -> tuple[list[Gpu], str | None]:
    """GPUs this process may use, honouring CUDA_VISIBLE_DEVICES; or [] and the reason."""
    if not torch_has_cuda():
        return [], "this torch is a CPU build"
    try:
        with NVML.opened() as pynvml:
            gpus = _every_gpu(pynvml)
    except NvmlUnavailable as e:
        return [], str(e)
    gpus = filter_visible(gpus, os.environ.get("CUDA_VISIBLE_DEVICES"))
    return gpus, None if gpus else "no GPU is visible (NVML found none, or CUDA_VISIBLE_DEVICES hides them)"


def _every_gpu(pynvml) -> list[Gpu]:
    try:
        return [Gpu(i, _text(pynvml.nvmlDeviceGetUUID(pynvml.nvmlDeviceGetHandleByIndex(i))))
                for i in range(pynvml.nvmlDeviceGetCount())]
    except pynvml.NVMLError as e:
        raise NvmlUnavailable(f"cannot list GPUs through NVML ({e})") from None


def _text(uuid: str | bytes) -> str:
    return uuid.decode() if isinstance(uuid, bytes) else str(uuid)


def normalise_gpu_uuid(uuid: str | bytes) -> str:
    """One spelling for a GPU UUID: NVML says 'GPU-3f2a...' (str or bytes), torch's
    ``get_device_properties(i).uuid`` prints '3f2a...' with no prefix."""
    return _text(uuid).strip().lower().removeprefix("gpu-")


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
