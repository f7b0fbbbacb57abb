"""Local ipyparallel engines, pinned to devices, and the process group that spans them.

The controller listens on 127.0.0.1 only, and the cluster's profile (connection files, logs)
lives in a private temporary folder that closing removes, so nothing is left behind.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
import weakref
from dataclasses import replace

import ipyparallel as ipp

from parakit.cluster import launchers, netns, placement
from parakit.cluster.placement import EngineInfo, Gpu, choose_backend, gpu_for_engine
from parakit.engine import devices, network, preload, process_group, stacks
from parakit.config.hosts import EngineLaunch, Launcher

START_TIMEOUT_S = launchers.START_TIMEOUT_S


class EngineSet:
    """Engines (positions in start order), grown on demand, reused across runs. Ranks are
    ordered by host, then local index (``placement.ranks_for``); on one host rank = position."""

    def __init__(self, gpus: list[Gpu], *, launch: EngineLaunch | None = None, device: str = "auto",
                 gpu_indices: list[int] | None = None, group_timeout_s: float = 300.0):
        self.gpus = gpus  # local sessions: chosen here; other launchers: each host chooses its own
        self.launch = launch or EngineLaunch()
        self.device, self.gpu_indices = device, gpu_indices
        self.group_timeout_s = group_timeout_s
        self.engines: list[EngineInfo] = []  # in start order (positions)
        self.group: tuple[tuple[int, ...], str] | None = None  # (engine ids, backend) of the live group
        self.controller_ip = "127.0.0.1"
        self._folder = tempfile.mkdtemp(prefix="parakit-cluster-")
        self._cluster: ipp.Cluster | None = None
        self._hosts: netns.TwoHosts | None = None
        self.client: ipp.Client | None = None
        self._retired: set[int] = set()  # ids of engines replaced, until the controller forgets them
        self._spare: str | None = None  # the engine set id of an engine started ahead (``start_spare``)
        # Closed at interpreter exit too; a weakref so the set can still be collected.
        self._exit_hook = _close_ref(weakref.ref(self))
        atexit.register(self._exit_hook)

    @property
    def size(self) -> int:
        return len(self.engines)

    @property
    def attached(self) -> bool:
        return self.launch.launcher is Launcher.ATTACH

    def ranks(self, world: int) -> list[EngineInfo]:
        """The engines of a run of ``world`` ranks, in rank order."""
        return [self.engines[p] for p in placement.ranks_for(self.engines, world)]

    def ids(self, world: int) -> list[int]:
        return [e.engine_id for e in self.ranks(world)]

    def start(self, n: int) -> None:
        """Start (or attach to) the controller and n engines, and pin each engine to its device."""
        if self.attached:
            self.client = launchers.attach(self.launch)
            self.controller_ip = launchers.controller_address(self.client)
            try:  # engines of a cluster just started may still be registering
                self.client.wait_for_engines(max(n, 1), timeout=START_TIMEOUT_S)
            except TimeoutError:
                raise RuntimeError(
                    f"the attached cluster has {len(self.client.ids)} engine(s) after {START_TIMEOUT_S} s, "
                    f"and {max(n, 1)} were asked for; start more there (ipcluster engines ...) or ask for fewer"
                ) from None
            self._pin_new(len(self.client.ids))
            return
        if self.launch.link is not None:
            self._hosts = netns.TwoHosts(self.launch.link)
            with open(os.path.join(self._folder, "netns"), "w") as f:
                f.write(self._hosts.namespace)  # for the watchdog, if this process dies
        self._cluster = launchers.new_cluster(
            self.launch, self._folder, launchers.controller_ip(self.launch, self._hosts and self._hosts.address_a))
        self._cluster.start_controller_sync()
        if not self.launch.profile:
            launchers.start_watchdog(self._folder)  # a shared profile's processes are not only ours to kill
        self._start_engines(n)  # before the client: engines import while the controller starts
        self.client = self._cluster.connect_client_sync()
        self.controller_ip = launchers.controller_address(self.client)
        self._pin_new(n)

    @property
    def _cpu_only(self) -> bool:
        """Local engines that no GPU awaits: they may import torch before they are pinned."""
        return self.launch.launcher is Launcher.LOCAL and not self.gpus

    def _start_engines(self, k: int) -> str:
        if self._hosts is None:
            return launchers.start_engines(self._cluster, self.launch, k, cpu_only=self._cpu_only)
        # Every other engine on the second host, so any number of workers spans the link.
        on_b = sum(1 for p in range(self.size, self.size + k) if p % 2 == 1)
        if k - on_b:
            launchers.start_engines(self._cluster, self.launch, k - on_b, cpu_only=self._cpu_only)
        if on_b:
            launchers.start_engines(self._cluster, self.launch, on_b, cpu_only=self._cpu_only,
                                    command=self._hosts.engine_command(sys.executable))

    def grow(self, n: int) -> None:
        """Add engines until there are n; existing engines keep running."""
        if n <= self.size:
            return
        if self.attached:
            if len(self.client.ids) < n:
                raise ValueError(
                    f"the attached cluster has {len(self.client.ids)} engine(s) and a run needs {n}; "
                    f"start more there (ipcluster engines -n {n - len(self.client.ids)} ...) or use fewer workers"
                )
        else:
            self._start_missing(n - self.size)
        self._pin_new(n)

    def start_spare(self) -> bool:
        """Start one engine ahead of need, without waiting for it: the next ``grow`` or
        ``replace_all`` takes it, registered by then, so a lost engine is replaced in the time
        its pinning takes instead of an engine's whole start (6-7 s of imports on 2 CPU cores).
        An idle spare holds ~60 MB (no torch yet), or, on CPUs, ~300 MB (torch and the training
        code, preloaded). Returns False where this set cannot start engines itself (attached, a
        link's hosts, a shared profile), or one is waiting."""
        if self._cluster is None or self.attached or self._hosts is not None or self.launch.profile or self._spare:
            return False
        self._spare = self._start_engines(1)
        return True

    def stop_spare(self) -> None:
        """Stop a spare nobody took (a run's end): no engine outlives the need for it."""
        if self._spare is None:
            return
        with contextlib.suppress(Exception):
            self._cluster.stop_engines_sync(self._spare)
        self._spare = None
        # registered already, it stays in the client's ids until the controller notices
        self._retired |= set(self.client.ids) - {e.engine_id for e in self.engines}

    def _start_missing(self, k: int) -> None:
        """Start ``k`` engines, the spare, if one was started, among them."""
        if k > 0 and self._spare is not None:
            self._spare, k = None, k - 1
        if k > 0:
            self._start_engines(k)

    def replace_all(self) -> bool:
        """Replace every engine with a fresh one, keeping the controller and the client: what a
        dead or stuck engine needs, in about half the time of a new cluster (8.3 s on 2 CPU
        cores). Returns False where this set cannot (engines it did not start itself, a link's
        second host): close it and start a new one instead."""
        if self._cluster is None or self.attached or self._hosts is not None or self.launch.profile:
            return False
        n = self.size
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)  # stuck in a collective, maybe: no polite stop
        self._retired |= {e.engine_id for e in self.engines}
        self.engines, self.group = [], None
        with contextlib.suppress(Exception):
            self._cluster.stop_engines_sync()  # the killed engines' launchers, reaped
        self._spare = None  # stop_engines_sync stopped a spare too
        self._start_missing(n)
        self._pin_new(n)
        return True

    def forget(self, positions: list[int]) -> list[int]:
        """Drop these engines (dead ones) from the set, keeping the others and the controller:
        the next ``grow`` starts their replacements, in a fraction of ``replace_all``'s time
        (one engine started, the others kept warm). The process group goes with them. Returns
        their engine ids."""
        gone = [self.engines[p] for p in positions]
        for e in gone:
            with contextlib.suppress(ProcessLookupError):
                os.kill(e.pid, signal.SIGKILL)  # dead already, or as good as: never two of one rank
        self._retired |= {e.engine_id for e in gone}
        self.engines = [e for p, e in enumerate(self.engines) if p not in positions]
        self.group = None
        return [e.engine_id for e in gone]

    def _pin_new(self, n: int) -> None:
        launchers.wait_for_engines(self._cluster, self.client, n, retired=self._retired)
        known = {e.engine_id for e in self.engines} | self._retired
        new_ids = [i for i in sorted(self.client.ids) if i not in known][: n - self.size]
        found = [EngineInfo.identified(engine_id, me)
                 for engine_id, me in zip(new_ids, self.client[new_ids].apply_sync(
                     preload.call, "parakit.engine.network", "identify"))]  # by name: see preload.call
        # Engines already here may move (a host's engines are counted anew): all are placed again.
        # A link's hosts (namespaces) share one machine, and its cores.
        one_machine = self.launch.launcher is Launcher.LOCAL
        everyone = placement.share_cores(placement.place_on_hosts(self.engines + found, _own_host()), one_machine)
        dumps = self.client[new_ids].apply_async(stacks.enable_stack_dumps, self._folder)
        placed, new = everyone[: self.size], self._pin(everyone[self.size:], first_position=self.size)
        paths = dumps.get(timeout=START_TIMEOUT_S)
        if not self._cpu_only:  # pinned now, they may import torch (CPU engines did as they started)
            self.client[new_ids].apply_async(preload.start)
        self.engines = placed + [replace(e, stack_file=path) for e, path in zip(new, paths)]
        for e in self.engines:
            self.client[e.engine_id].apply_async(preload.call, "parakit.cluster.engines", "_set_threads", e.threads)
        self.client.wait(timeout=START_TIMEOUT_S)

    def _pin(self, engines: list[EngineInfo], first_position: int) -> list[EngineInfo]:
        """Pin these engines (positions from ``first_position`` on), all at once; returns them
        with the device each is on."""
        pending = []
        for position, e in enumerate(engines, start=first_position):
            if self.launch.launcher is Launcher.LOCAL:  # one machine: GPUs round robin over all
                call = (devices.pin, gpu_for_engine(position, self.gpus), e.threads)
            else:  # each host pins by local rank to its own GPUs, and says which
                call = (devices.pin_on_host, self.device, self.gpu_indices, e.local_index, e.threads)
            pending.append((e, self.client[e.engine_id].apply_async(*call)))
        pinned = []
        for e, ar in pending:
            got = ar.get(timeout=START_TIMEOUT_S)  # a PinnedDevice; its host place_on_hosts named
            pinned.append(replace(e, gpu_uuid=got.gpu_uuid, device=got.device, device_name=got.device_name,
                                  gpu_index=got.gpu_index))
        return pinned

    def interrupt(self, engine_id: int, sig: int = signal.SIGINT) -> None:
        """Send SIGINT to one engine: the task it runs gets a KeyboardInterrupt (a training
        run ends after an agreed step). SIGUSR2 asks a training run to end for a switch."""
        pid = next((e.pid for e in self.engines if e.engine_id == engine_id), None)
        if pid is None:
            return  # no longer one of ours (replaced): nothing to interrupt
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass  # already gone; the caller reports the rank as not stopping

    def pids(self) -> list[int]:
        return [e.pid for e in self.engines]

    def stacks(self, engines: list[EngineInfo], wait_s: float = 1.0) -> dict[int, str]:
        """These engines' thread stacks now (faulthandler's text), by engine id; an engine that
        did not write one within ``wait_s`` (gone, or stuck outside Python) is left out. Takes
        the engines' descriptions rather than positions: the set may have changed since."""
        sizes = {}
        for e in engines:
            sizes[e.engine_id] = os.path.getsize(e.stack_file) if os.path.exists(e.stack_file) else 0
            try:
                os.kill(e.pid, signal.SIGUSR1)
            except ProcessLookupError:
                pass
        time.sleep(wait_s)
        out = {}
        for e in engines:
            try:
                with open(e.stack_file) as f:
                    f.seek(sizes[e.engine_id])
                    text = f.read()
            except OSError:
                continue
            if text.strip():
                out[e.engine_id] = text
        return out

    def dead(self) -> list[int]:
        """Positions of engines that are gone (ranks too, on one host): their process has exited (or is a zombie
        its launcher has not reaped yet), or the controller has unregistered them."""
        registered = set(self.client.ids) if self.client is not None else set()
        here = socket.gethostname()  # a pid says nothing about a process on another host
        return [i for i, e in enumerate(self.engines)
                if e.engine_id not in registered or (e.hostname == here and not _process_alive(e.pid))]

    def dead_ids(self, ids: list[int]) -> list[int]:
        """Which of these engines are gone (by registration; by process too where local)."""
        gone = {self.engines[p].engine_id for p in self.dead()}
        return [i for i in ids if i in gone]

    def ensure_group(self, world: int) -> tuple[str, str | None]:
        """Form a process group over the engines of a ``world``-rank run, unless it is live.

        Returns (backend, warning or None).
        """
        ranks = self.ranks(world)
        backend, warning = choose_backend([e.gpu for e in ranks], _nccl_available([e.gpu for e in ranks]))
        ids = tuple(e.engine_id for e in ranks)
        if self.group == (ids, backend):
            return backend, warning
        self.leave_group()
        ifname = self.launch.ifname
        if self.launch.multi_host:
            addr = self.client[ids[0]].apply_sync(network.group_address, self.controller_ip, ifname)
        else:
            addr = "127.0.0.1"
        port = self.client[ids[0]].apply_sync(process_group.open_store, addr)
        joins = [
            self.client[engine_id].apply_async(
                process_group.join, rank, world, addr, port, backend, self.group_timeout_s, ifname
            )
            for rank, engine_id in enumerate(ids)
        ]
        for ar in joins:
            ar.get(timeout=START_TIMEOUT_S)
        self.group = (ids, backend)
        return backend, warning

    def pinned_gpus(self) -> list[Gpu]:
        """The GPUs the engines are pinned to, each once, in engine order (engines on other
        hosts say which once they are up)."""
        seen: dict[str, Gpu] = {}
        for e in self.engines:
            if e.gpu is not None:
                seen.setdefault(e.gpu.uuid, e.gpu)
        return list(seen.values())

    def hosts(self) -> list[str]:
        """The hosts engines are on, in rank order of hosts."""
        return sorted({e.host for e in self.engines}, key=lambda h: next(
            e.host_index for e in self.engines if e.host == h))

    def leave_group(self) -> None:
        if self.client is not None and self.engines:
            self.client[[e.engine_id for e in self.engines]].apply_sync(process_group.leave)
        self.group = None

    def close(self, kill: bool = False) -> None:
        """Stop every engine and the controller, and remove the cluster's folder. ``kill`` ends
        the engines with SIGKILL first: for engines being replaced because they are stuck in a
        collective, where a polite SIGTERM would only be waited on for 5 s. An attached
        cluster is left running (its owner stops it): only this session's group is left."""
        atexit.unregister(self._exit_hook)
        if kill and not self.attached:
            for pid in self.pids():
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        try:
            if self.attached and self.client is not None and not kill:
                with contextlib.suppress(Exception):
                    self.leave_group()
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
            if self._hosts is not None:
                self._hosts.close()
                self._hosts = None
            shutil.rmtree(self._folder, ignore_errors=True)


def _nccl_available(gpus: list[Gpu | None]) -> bool:
    """Whether this torch has NCCL, asked only where a rank has a GPU: a CPU session's notebook
    never imports torch (2 s) to start a run."""
    if not any(gpus):
        return False
    import torch.distributed as dist

    return dist.is_nccl_available()


def _set_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _own_host() -> str:
    return network.identify().host_key


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
