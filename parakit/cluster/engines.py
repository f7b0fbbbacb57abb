"""Local ipyparallel engines, pinned to devices, and the process group that spans them.

The controller listens on 127.0.0.1 only, and the cluster's profile (connection files, logs)
lives in a private temporary folder that closing removes, so nothing is left behind.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import weakref

import ipyparallel as ipp
import torch.distributed as dist

from parakit.cluster import watchdog
from parakit.cluster.placement import Gpu, choose_backend, gpu_for_engine
from parakit.engine import devices, stacks, process_group

START_TIMEOUT_S = 120


class EngineSet:
    """N engines in engine order (rank = position), grown on demand, reused across runs."""

    def __init__(self, gpus: list[Gpu], *, group_timeout_s: float = 300.0):
        self.gpus = gpus
        self.group_timeout_s = group_timeout_s
        self.engines: list[dict] = []  # one description per engine, from pinning
        self.group: tuple[int, str] | None = None  # (world size, backend) of the live group
        self._folder = tempfile.mkdtemp(prefix="parakit-cluster-")
        self._cluster: ipp.Cluster | None = None
        self.client: ipp.Client | None = None
        # Closed at interpreter exit too; a weakref so the set can still be collected.
        self._exit_hook = _close_ref(weakref.ref(self))
        atexit.register(self._exit_hook)

    @property
    def size(self) -> int:
        return len(self.engines)

    def ids(self, n: int) -> list[int]:
        return [e["engine_id"] for e in self.engines[:n]]

    def start(self, n: int) -> None:
        """Start the controller and n engines, and pin each engine to its device."""
        self._cluster = ipp.Cluster(
            n=n,
            controller_ip="127.0.0.1",
            profile_dir=self._folder,
            log_level=logging.WARNING,
            engine_timeout=START_TIMEOUT_S,
        )
        self.client = self._cluster.start_and_connect_sync(activate=False)
        self._start_watchdog()
        self._pin_new(n)

    def _start_watchdog(self) -> None:
        """A process that stops this cluster if this (client) process dies without closing it."""
        started = watchdog.start_time(os.getpid())
        if started is None:  # no /proc (macOS): atexit is all there is
            return
        subprocess.Popen([sys.executable, "-m", "parakit.cluster.watchdog", str(os.getpid()), started, self._folder],
                         start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)

    def grow(self, n: int) -> None:
        """Add engines until there are n; existing engines keep running."""
        if n <= self.size:
            return
        self._cluster.start_engines_sync(n=n - self.size)
        self.client.wait_for_engines(n, timeout=START_TIMEOUT_S)
        self._pin_new(n)

    def _pin_new(self, n: int) -> None:
        self.client.wait_for_engines(n, timeout=START_TIMEOUT_S)
        known = {e["engine_id"] for e in self.engines}
        new_ids = [i for i in sorted(self.client.ids) if i not in known][: n - self.size]
        # Threads per engine: its share of the cores, so one worker means a fixed slice of the
        # machine and adding workers adds hardware, as adding GPUs would.
        threads = max(1, _cores() // n)
        pending = []
        for position, engine_id in enumerate(new_ids, start=self.size):
            gpu = gpu_for_engine(position, self.gpus)
            ar = self.client[engine_id].apply_async(devices.pin, gpu and gpu.uuid, threads)
            pending.append((engine_id, gpu, ar))
        for engine_id, gpu, ar in pending:
            info = ar.get(timeout=START_TIMEOUT_S)
            info.update(engine_id=engine_id, gpu_index=gpu and gpu.index)
            self.engines.append(info)
        self.client[self.ids(n)].apply_sync(_set_threads, threads)
        paths = self.client[new_ids].apply_sync(stacks.enable_stack_dumps, self._folder)
        for engine_id, path in zip(new_ids, paths):
            next(e for e in self.engines if e["engine_id"] == engine_id)["stack_file"] = path
        for e in self.engines:
            e["threads"] = threads

    def interrupt(self, engine_id: int) -> None:
        """Send SIGINT to one engine: the task it runs gets a KeyboardInterrupt."""
        pid = next(e["pid"] for e in self.engines if e["engine_id"] == engine_id)
        try:
            os.kill(pid, signal.SIGINT)
        except ProcessLookupError:
            pass  # already gone; the caller reports the rank as not stopping

    def pids(self) -> list[int]:
        return [e["pid"] for e in self.engines]

    def stacks(self, positions: list[int], wait_s: float = 1.0) -> dict[int, str]:
        """Each engine's thread stacks now (faulthandler's text), by position; an engine that
        did not write one within ``wait_s`` is left out."""
        sizes = {}
        for i in positions:
            e = self.engines[i]
            sizes[i] = os.path.getsize(e["stack_file"]) if os.path.exists(e.get("stack_file", "")) else 0
            try:
                os.kill(e["pid"], signal.SIGUSR1)
            except ProcessLookupError:
                pass
        time.sleep(wait_s)
        out = {}
        for i in positions:
            try:
                with open(self.engines[i]["stack_file"]) as f:
                    f.seek(sizes[i])
                    text = f.read()
            except (OSError, KeyError):
                continue
            if text.strip():
                out[i] = text
        return out

    def dead(self) -> list[int]:
        """Positions (ranks) of engines that are gone: their process has exited (or is a zombie
        its launcher has not reaped yet), or the controller has unregistered them."""
        registered = set(self.client.ids) if self.client is not None else set()
        return [i for i, e in enumerate(self.engines)
                if e["engine_id"] not in registered or not _process_alive(e["pid"])]

    def ensure_group(self, world: int) -> tuple[str, str | None]:
        """Form a process group over the first ``world`` engines, unless one of that size is live.

        Returns (backend, warning or None).
        """
        gpus = [gpu_for_engine(i, self.gpus) for i in range(world)]
        backend, warning = choose_backend(gpus, dist.is_nccl_available())
        if self.group == (world, backend):
            return backend, warning
        self.leave_group()
        ids = self.ids(world)
        port = self.client[ids[0]].apply_sync(process_group.open_store)
        joins = [
            self.client[engine_id].apply_async(
                process_group.join, rank, world, "127.0.0.1", port, backend, self.group_timeout_s
            )
            for rank, engine_id in enumerate(ids)
        ]
        for ar in joins:
            ar.get(timeout=START_TIMEOUT_S)
        self.group = (world, backend)
        return backend, warning

    def leave_group(self) -> None:
        if self.client is not None and self.engines:
            self.client[self.ids(self.size)].apply_sync(process_group.leave)
        self.group = None

    def close(self, kill: bool = False) -> None:
        """Stop every engine and the controller, and remove the cluster's folder. ``kill`` ends
        the engines with SIGKILL first: for engines being replaced because they are stuck in a
        collective, where a polite SIGTERM would only be waited on for 5 s."""
        atexit.unregister(self._exit_hook)
        if kill:
            for pid in self.pids():
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        try:
            if self.client is not None:
                self.client.close()
            if self._cluster is not None:
                # Engines end with exit code 1 on SIGTERM, which ipyparallel logs as a warning
                # with each engine's whole log: noise under every notebook's last cell.
                self._cluster.log.setLevel(logging.ERROR)
                self._cluster.stop_cluster_sync()
        finally:
            self._cluster = self.client = None
            self.engines, self.group = [], None
            shutil.rmtree(self._folder, ignore_errors=True)


def _set_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _close_ref(ref):
    def close() -> None:
        engines = ref()
        if engines is not None:
            engines.close()

    return close


def _process_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")  # zombie or dead: killed, not yet reaped
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)  # no /proc (macOS): existence is the best we can tell
        except OSError:
            return False
        return True
