"""Where the engines run: which ipyparallel launcher starts them, which network interface the
process group uses between hosts, and the simulated slow link of a local session.

Standard library only, and no engine is touched here: a wrong setting is one line naming
the fix, before anything starts.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from parakit.config.choices import Choice


def usable_cores() -> int:
    """The cores this process may run on: its affinity set where the OS has one (a container
    or a taskset pins fewer than the machine has), else the machine's count. The one count the
    placement, the engines' facts and the advisor share."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class Launcher(Choice):
    """How engines start. parakit does not launch hosts itself: it uses ipyparallel's own
    launchers, so a profile configured for ipcluster (hosts, queue, modules) works as is."""

    LOCAL = "local"  # engine processes on this machine
    MPI = "mpi"  # mpiexec (ipyparallel's MPI launcher); ranks follow MPI's host order
    SLURM = "slurm"  # sbatch from the notebook (ipyparallel's Slurm launcher)
    SSH = "ssh"  # ssh to the hosts of the profile's ipcluster_config.py
    ATTACH = "attach"  # an ipcluster already running (e.g. started by an sbatch script)


_RATE_UNITS = {"bit": 1, "kbit": 1e3, "mbit": 1e6, "gbit": 1e9, "tbit": 1e12}
_DELAY_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0}


@dataclass(frozen=True)
class Link:
    """A network link between the hosts of a local session: a rate and a one-way delay,
    applied with ``tc netem`` on both ends of a veth pair between two network namespaces (or
    the rate alone with ``tc tbf`` where the kernel has no netem)."""

    rate_bits_per_s: float
    delay_s: float
    text: str

    @classmethod
    def parse(cls, text: object) -> "Link":
        """``"1gbit,1ms"``, ``"100mbit,0.5ms"``, ``"200mbit"`` (no added delay)."""
        if isinstance(text, Link):
            return text
        if not isinstance(text, str):
            raise ValueError(f"link must be text such as '1gbit,1ms' (got {text!r})")
        parts = [part.strip().lower() for part in text.split(",")]
        rate = _number_with_unit(parts[0], _RATE_UNITS)
        delay = _number_with_unit(parts[1], _DELAY_UNITS) if len(parts) > 1 else 0.0
        if len(parts) > 2 or rate is None or not rate > 0 or delay is None or delay < 0 or delay > 10:
            raise ValueError(
                f"link {text!r} is not RATE[,DELAY] with RATE in bit/kbit/mbit/gbit and DELAY in "
                "us/ms/s, e.g. link='1gbit,1ms'"
            )
        return cls(rate, delay, text.strip())

    @property
    def bytes_per_s(self) -> float:
        return self.rate_bits_per_s / 8

    def tbf_args(self) -> list[str]:
        """The ``tc qdisc ... tbf`` arguments, for kernels without netem: the rate only. The
        bucket holds 10 ms at the rate (at least 64 KiB, a GSO packet), the queue 50 ms."""
        burst = max(64 * 1024, int(self.bytes_per_s / 100))
        return ["rate", f"{int(self.rate_bits_per_s)}bit", "burst", str(burst), "latency", "50ms"]

    def netem_args(self) -> list[str]:
        """The ``tc qdisc ... netem`` arguments: netem's own rate limiter, so rate and delay
        come from one queue (a separate tbf would add its own burst behaviour)."""
        args = ["rate", f"{int(self.rate_bits_per_s)}bit"]
        if self.delay_s:
            args += ["delay", f"{self.delay_s * 1e6:.0f}us"]
        # The queue must hold what is in flight at this rate and delay, or netem drops packets
        # and TCP slows far below the rate: at least rate x delay, in 1500-byte packets.
        in_flight = int(self.bytes_per_s * max(self.delay_s, 1e-3) * 4 / 1500)
        return args + ["limit", str(max(1000, in_flight))]


def _number_with_unit(text: str, units: dict[str, float]) -> float | None:
    m = re.fullmatch(r"([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([a-z]+)", text)
    if not m or m.group(2) not in units:
        return None
    return float(m.group(1)) * units[m.group(2)]


@dataclass(frozen=True)
class EngineLaunch:
    """How a session gets its engines. Checked on creation."""

    launcher: Launcher = Launcher.LOCAL
    """What starts the engines: local processes, mpiexec, slurm, ssh, or attach to a running
    cluster. Sessions take it as ``engines=``, ipyparallel's word (``Cluster(engines="mpi")``)."""
    profile: str | None = None
    """ipyparallel profile name, or a profile folder (a path), for mpi/slurm/ssh/attach."""
    cluster_id: str | None = None
    """Which running cluster of the profile to attach to (attach), or the id to give (others)."""
    ifname: str | None = None
    """Network interface between hosts (e.g. 'eth0', 'ib0'): the group's address is rank 0's
    address on it, and gloo and NCCL use it (GLOO_SOCKET_IFNAME, NCCL_SOCKET_IFNAME)."""
    link: Link | None = None
    """A simulated slow link between two hosts made of network namespaces (local only)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "launcher", Launcher.parse(self.launcher, "engines"))
        for name in ("profile", "cluster_id", "ifname"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ValueError(f"{name} must be a non-empty string (got {value!r})")
        if self.ifname is not None and not re.fullmatch(r"[A-Za-z0-9_.:@-]{1,15}", self.ifname):
            raise ValueError(f"ifname {self.ifname!r} is not a network interface name (e.g. 'eth0'); see `ip link`")
        if self.link is not None:
            object.__setattr__(self, "link", Link.parse(self.link))
            if self.launcher is not Launcher.LOCAL:
                raise ValueError(
                    f"link= simulates a network between local engines; engines={self.launcher.value} has a "
                    "real one: drop link, or use engines='local'"
                )
            if self.ifname is not None:
                raise ValueError("link= makes its own interfaces; drop ifname")
        if self.launcher is Launcher.LOCAL and (self.profile or self.cluster_id):
            raise ValueError(
                "profile/cluster_id name an ipyparallel cluster, but engines='local' starts a private one: "
                "use engines='attach' (a running ipcluster) or engines='mpi'|'slurm'|'ssh'"
            )

    @property
    def multi_host(self) -> bool:
        """Engines may be on more than one host (or network namespace)."""
        return self.launcher is not Launcher.LOCAL or self.link is not None

    def describe(self) -> dict:
        """What a run records about where it ran."""
        return {"engines": self.launcher.value, "ifname": self.ifname,
                "link": self.link.text if self.link else None,
                "link_rate_bits_per_s": self.link.rate_bits_per_s if self.link else None,
                "link_delay_s": self.link.delay_s if self.link else None}
