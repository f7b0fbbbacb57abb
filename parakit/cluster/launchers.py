"""Getting an ipyparallel cluster for each way engines can start (hosts.Launcher): a private
local one, one whose engines ipyparallel's MPI, Slurm or SSH launcher starts, or one that is
already running, attached to by profile and cluster id."""

from __future__ import annotations

import logging
import os
import time
from urllib.parse import urlparse

import ipyparallel as ipp
import psutil
from traitlets.config import Config

from parakit.engine import network
from parakit.config.hosts import EngineLaunch, Launcher

START_TIMEOUT_S = 120


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
    return ipp.Cluster(**options)


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
    return (f"the engines' {name} launcher exited with code {code} before they started"
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
