"""Which host an engine is on, and its addresses: what the process group needs to span hosts.

A host is a hostname and a network namespace: two namespaces of one machine are two hosts to
the network (each has its own interfaces and addresses), which is how the tests and a local
session's slow link make several hosts on one machine.
"""

from __future__ import annotations

import fcntl
import os
import socket
import struct

from parakit.records.engine_facts import EngineIdentity
from parakit.config.hosts import usable_cores

SIOCGIFADDR = 0x8915  # Linux ioctl: an interface's IPv4 address


def identify() -> EngineIdentity:
    """This engine's host and the hints launchers give about its place on it."""
    netns = _netns_inode()
    local = next((os.environ[v] for v in ("OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID")
                  if os.environ.get(v, "").isdigit()), None)
    return EngineIdentity(
        hostname=socket.gethostname(),
        netns=netns,
        netns_name=_netns_name(netns),
        local_hint=int(local) if local is not None else None,
        cpu_count=usable_cores(),
        pid=os.getpid(),
    )


def address_toward(ip: str) -> str:
    """The local address this host uses to reach ``ip`` (the kernel's route choice; a UDP
    connect sends nothing)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((ip, 9))
        return s.getsockname()[0]


def interface_address(ifname: str) -> str | None:
    """The IPv4 address of interface ``ifname``, or None if it has none (or does not exist)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            packed = fcntl.ioctl(s.fileno(), SIOCGIFADDR, struct.pack("256s", ifname[:15].encode()))
        except OSError:
            return None
    return socket.inet_ntoa(packed[20:24])


def interface_with(address: str) -> str | None:
    """The name of the interface that holds ``address``, or None."""
    for _, name in socket.if_nameindex():
        if interface_address(name) == address:
            return name
    return None


def group_address(controller_ip: str, ifname: str | None) -> str:
    """The address rank 0 offers the group: its address on ``ifname`` when one is named, else
    the one it reaches the controller from, which the other hosts can reach too (they reach
    the controller)."""
    if ifname:
        address = interface_address(ifname)
        if address is None:
            raise ValueError(f"interface {ifname!r} has no IPv4 address on {socket.gethostname()}; "
                             f"its interfaces: {', '.join(n for _, n in socket.if_nameindex())}")
        return address
    return address_toward(controller_ip)


def _netns_inode() -> str:
    try:
        return str(os.stat("/proc/self/ns/net").st_ino)
    except OSError:
        return "-"  # no /proc (macOS): one namespace per host is all there is


def _netns_name(inode: str) -> str | None:
    """The name ``ip netns`` gave this namespace, if any (its bind mount in /run/netns)."""
    try:
        for name in os.listdir("/run/netns"):
            if str(os.stat(os.path.join("/run/netns", name)).st_ino) == inode:
                return name
    except OSError:
        pass
    return None
