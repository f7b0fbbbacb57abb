"""Getting an ipyparallel cluster for each way engines can start (hosts.Launcher): a private
local one, one whose engines ipyparallel's MPI, Slurm or SSH launcher starts, or one that is
already running, attached to by profile and cluster id."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from urllib.parse import urlparse

import ipyparallel as ipp
import psutil
from traitlets.config import Config

from parakit.cluster import watchdog
from parakit.engine import network, preload
from parakit.config.hosts import EngineLaunch, Launcher

START_TIMEOUT_S = 120
HEARTBEAT_MS = 500
"""How often the controller of a local cluster pings its engines (ipyparallel's default: 3000).
The controller registers an engine, and a client may use it, only at the first beat after the
engine's heart has answered: up to two periods after the engine is ready, 3-6 s of a 7-s cold
start at the default. What beats cost: an idle controller and 2 engines used 0.40% of one core
(0.05% at 3 s) on a 2-core VM."""
HEARTBEAT_MISSES = 30_000 // HEARTBEAT_MS  # an engine that stops answering is still dead after 30 s, as by default


def controller_ip(launch: EngineLaunch, link_address: str | None) -> str:
    """Where the controller listens. A local session: loopback (nothing exposed), or its end
    of the link. Engines on other hosts need an address they can reach: the one on ``ifname``,
    else every interface (ipyparallel signs each message with the cluster's key, and the
    connection file that holds the key is readable by its owner only)."""
    if link_address:
        return link_address
    if launch.launcher is Launcher.LOCAL:
        return "127.0.0.1"
    if launch.ifname:
        address = network.interface_address(launch.ifname)
        if address is None:
            raise ValueError(f"ifname {launch.ifname!r} has no IPv4 address on this host; see `ip addr`")
        return address
    return "*"


def new_cluster(launch: EngineLaunch, folder: str, ip: str) -> ipp.Cluster:
    """A cluster this session starts (and stops). Without a profile it lives in ``folder``,
    which closing removes; with one, the profile's ipcluster_config.py configures the
    launcher (SSH hosts, Slurm options, mpiexec arguments), as it does for ``ipcluster``."""
    options = dict(
        controller_ip=ip,
        engines=launch.launcher.value,
        # ERROR, not WARNING: an engine that dies is logged by ipyparallel as a warning with
        # its whole log (screens of it under a notebook cell); parakit says which rank died,
        # at which step and what the run did about it.
        log_level=logging.ERROR,
        engine_timeout=START_TIMEOUT_S,
    )
    if launch.cluster_id:
        options["cluster_id"] = launch.cluster_id
    options.update(_profile_options(launch.profile) if launch.profile else {"profile_dir": folder})
    extra = engine_environment(launch)
    if extra:
        options["config"] = Config({"MPIEngineSetLauncher": {"environment": extra}})
    if launch.launcher is Launcher.LOCAL:
        options["controller_args"] = [f"--HeartMonitor.period={HEARTBEAT_MS}",
                                      f"--HeartMonitor.max_heartmonitor_misses={HEARTBEAT_MISSES}"]
        # Engines start with the controller, not after it: they import (1-2 s) while it starts,
        # then read its connection file (local engines share this file system).
        options["send_engines_connection_env"] = False
    return ipp.Cluster(**options)


def start_engines(cluster: ipp.Cluster, launch: EngineLaunch, k: int, *, cpu_only: bool,
                  command: list[str] | None = None) -> str:
    """Start ``k`` engines of a cluster this session started, without waiting for them; returns
    the engine set's id. Local engines that get no GPU (``cpu_only``) hide every GPU from the
    start and import the training code as they start (engine.preload), while the controller
    registers them. ``command``: the engine command, where it is not ipyparallel's own. Other
    launchers start engines as their profile configures them."""
    if launch.launcher is not Launcher.LOCAL:
        return cluster.start_engines_sync(n=k)
    options: dict = {"engine_args": [
        # the controller is starting too (``new_cluster``): its file may take a while on a busy machine
        f"--IPEngine.wait_for_url_file={START_TIMEOUT_S}", f"--IPEngine.timeout={START_TIMEOUT_S // 4}"]}
    if cpu_only:
        options["engine_args"].append(f"--IPEngine.startup_command={preload.ON_START}")
        options["environment"] = {"CUDA_VISIBLE_DEVICES": ""}
    if command is not None:
        options["engine_cmd"] = command
    return cluster.start_engines_sync(n=k, **options)


MPI_AS_ROOT = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}


def engine_environment(launch: EngineLaunch) -> dict[str, str]:
    """Variables the engines' launcher needs. Open MPI's mpiexec refuses at once to run as root
    (containers, many cloud notebooks) unless both of these are set; parakit sets them for its
    own mpiexec only, and says so (``running_as_root_note``)."""
    if launch.launcher is Launcher.MPI and hasattr(os, "geteuid") and os.geteuid() == 0:
        return {k: v for k, v in MPI_AS_ROOT.items() if k not in os.environ}
    return {}


def running_as_root_note(launch: EngineLaunch) -> str | None:
    if engine_environment(launch):
        return ("running as root: the engines' mpiexec gets OMPI_ALLOW_RUN_AS_ROOT=1 and "
                "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1, which Open MPI needs to start as root")
    return None


def start_watchdog(folder: str) -> None:
    """A process that stops the cluster in ``folder`` if this (client) process dies without
    closing it (cluster/watchdog.py)."""
    started = watchdog.start_time(os.getpid())
    if started is None:  # no /proc (macOS): atexit is all there is
        return
    subprocess.Popen([sys.executable, "-m", "parakit.cluster.watchdog", str(os.getpid()), started, folder],
                     start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL)


def wait_for_engines(cluster: ipp.Cluster | None, client: ipp.Client, n: int, timeout_s: float = START_TIMEOUT_S,
                     retired: set[int] = frozenset()) -> None:
    """Wait until ``n`` engines have registered (not counting ``retired`` ones: replaced, and
    the controller may not have noticed yet). A launcher whose process ends first (mpiexec
    refusing to run, srun without an allocation, ssh failing) is reported at once, with its
    exit code and the last lines of its output, instead of after the whole timeout."""
    deadline = time.monotonic() + timeout_s
    while len(set(client.ids) - retired) < n:
        for launcher in (cluster.engines.values() if cluster is not None else ()):
            failed = _launcher_failure(launcher)
            if failed:
                raise RuntimeError(failed)
        if time.monotonic() > deadline:
            raise TimeoutError(f"{n} engines not ready in {timeout_s:.0f} seconds; {len(client.ids)} registered")
        time.sleep(0.2)


def _launcher_failure(launcher) -> str | None:
    """Why an engine launcher's process ended, if it did: its exit code and output tail. The
    process is asked directly: ipyparallel notices an exit only on its event loop, which does
    not run between its synchronous calls."""
    code, ended = None, getattr(launcher, "state", None) == "after"
    if ended:
        data = launcher.stop_data or {}
        code = data.get("exit_code") if isinstance(data, dict) else None
    process = getattr(launcher, "process", None)  # a psutil.Process: mpiexec, srun, ssh
    if not ended and process is not None:
        try:
            ended = not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
            code = process.wait(0) if ended else None
        except psutil.NoSuchProcess:
            ended = True
        except psutil.TimeoutExpired:
            ended = False
    if not ended:
        return None
    try:
        output = launcher.get_output() or ""
    except Exception:  # noqa: BLE001 - the output is a courtesy; the exit code is the news
        output = ""
    tail = "\n".join(output.strip().splitlines()[-12:])
    name = type(launcher).__name__.replace("EngineSetLauncher", "").lower() or "engine"
    # ipyparallel may have reaped the process and not yet filed its code: say so, not "None"
    how = f"with code {code}" if code is not None else "(its exit code not reported yet)"
    return (f"the engines' {name} launcher exited {how} before they started"
            + (f"; its last output:\n{tail}" if tail else " and printed nothing"))


def attach(launch: EngineLaunch) -> ipp.Client:
    """A client of a cluster someone else started (``ipcluster start``, an sbatch script)."""
    options = _profile_options(launch.profile) if launch.profile else {}
    if launch.cluster_id is not None:
        options["cluster_id"] = launch.cluster_id
    try:
        cluster = ipp.Cluster.from_file(**options)
    except FileNotFoundError:
        where = options.get("profile_dir") or f"profile {options.get('profile', 'default')!r}"
        raise ValueError(
            f"no running ipcluster with cluster_id={launch.cluster_id!r} in {where}; start one "
            "(ipcluster start --cluster-id=ID, or the sbatch recipe in docs/multi-host.md) or check the names"
        ) from None
    return cluster.connect_client_sync()


def controller_address(client: ipp.Client) -> str:
    """The address engines reach the controller at, from the client's connection info."""
    host = urlparse(client._config["registration"]).hostname or "127.0.0.1"  # no public API for it
    if host in ("*", "0.0.0.0"):
        location = client._config.get("location") or "127.0.0.1"
        return _resolve(location)
    return host


def _profile_options(profile: str) -> dict:
    # A path names a profile folder; a bare name, a profile under ~/.ipython.
    if os.sep in profile or profile.startswith("."):
        return {"profile_dir": os.path.abspath(os.path.expanduser(profile))}
    return {"profile": profile}


def _resolve(name: str) -> str:
    import socket

    try:
        return socket.gethostbyname(name)
    except OSError:
        return "127.0.0.1"
