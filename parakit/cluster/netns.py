"""Two hosts on one machine: this network namespace and a second one, joined by a veth pair,
optionally with ``tc netem`` on both ends so the pair behaves like a network link of a given
rate and delay.

What crosses between the hosts then really goes through a network device: TCP, gloo's
sockets and the kernel's queueing, so a slow link slows the collectives the way a real one
would, and the lessons of speed-up and compression show on a laptop. Needs root (or
CAP_NET_ADMIN), ``ip`` and ``tc`` from iproute2, and netem in the kernel; ``why_not`` says
which is missing.
"""

from __future__ import annotations

import functools
import itertools
import os
import shutil
import subprocess

from parakit.config.hosts import Link

SUBNET_PREFIX = "10.213"  # 10.213.N.0/24, N picked free at creation


def why_not(link: Link | None = None) -> str | None:
    """Why namespaces (with this link) cannot be made here, or None when they can."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "it needs root (network namespaces and tc need CAP_NET_ADMIN); run as root, or drop link"
    missing = [tool for tool in ("ip", "tc") if shutil.which(tool) is None]
    if missing:
        return f"{' and '.join(missing)} not found; install iproute2 (apt-get install iproute2), or drop link"
    if link is not None and link.delay_s and shaper() != "netem":
        return (f"this kernel has no netem qdisc, so no delay can be added; give the rate alone "
                f"(link={link.text.split(',')[0].strip()!r}), which tbf shapes")
    return None


@functools.cache  # the kernel's qdiscs do not change while the process runs
def shaper() -> str:
    """"netem" when this kernel has the netem qdisc (rate and delay), else "tbf" (rate only).
    Found by trying it on a veth pair made and removed for the purpose, once per process."""
    probe = f"pkq{os.getpid() % 100000}"
    made = subprocess.run(["ip", "link", "add", probe, "type", "veth", "peer", "name", probe + "p"],
                          capture_output=True, check=False).returncode == 0
    ok = made and subprocess.run(["tc", "qdisc", "add", "dev", probe, "root", "netem", "delay", "1ms"],
                                 capture_output=True, check=False).returncode == 0
    if made:
        subprocess.run(["ip", "link", "del", probe], capture_output=True, check=False)
    return "netem" if ok else "tbf"


class TwoHosts:
    """Host A is this namespace (controller, client, the first engines); host B a new one."""

    _tokens = itertools.count()  # one per host this process makes, so their names differ

    def __init__(self, link: Link | None = None):
        reason = why_not(link)
        if reason:
            raise RuntimeError(f"cannot make a second host: {reason}")
        token = f"{os.getpid() % 100000}x{next(TwoHosts._tokens)}"
        self.namespace = f"parakit-{token}"
        self.veth_a, self.veth_b = f"pka{token}"[:15], f"pkb{token}"[:15]
        self.link = link
        self.shaped_by: str | None = None
        subnet = _free_subnet()
        self.address_a, self.address_b = f"{subnet}.1", f"{subnet}.2"
        self._made = False
        try:
            self._make(subnet)
        except BaseException:
            self.close()
            raise

    def _make(self, subnet: str) -> None:
        ns = ["ip", "netns", "exec", self.namespace]
        _run("ip", "netns", "add", self.namespace)
        self._made = True
        _run("ip", "link", "add", self.veth_a, "type", "veth", "peer", "name", self.veth_b)
        _run("ip", "link", "set", self.veth_b, "netns", self.namespace)
        _run("ip", "addr", "add", f"{self.address_a}/24", "dev", self.veth_a)
        _run("ip", "link", "set", self.veth_a, "up")
        _run(*ns, "ip", "addr", "add", f"{self.address_b}/24", "dev", self.veth_b)
        _run(*ns, "ip", "link", "set", self.veth_b, "up")
        _run(*ns, "ip", "link", "set", "lo", "up")
        if self.link is not None:
            # Each end shapes what it sends: both directions get the rate (and the delay), as
            # on a full-duplex link.
            kind = shaper()
            args = self.link.netem_args() if kind == "netem" else self.link.tbf_args()
            _run("tc", "qdisc", "add", "dev", self.veth_a, "root", kind, *args)
            _run(*ns, "tc", "qdisc", "add", "dev", self.veth_b, "root", kind, *args)
            self.shaped_by = kind

    def engine_command(self, python: str) -> list[str]:
        """The command that starts an ipyparallel engine on host B. ``ip netns exec`` and
        ``env`` exec in place, so the engine's pid is the one the launcher sees. NCCL_HOSTID
        makes NCCL take host B for another machine: it then talks to host A through its socket
        transport, over the link, instead of through shared memory."""
        return ["ip", "netns", "exec", self.namespace, "env", f"NCCL_HOSTID={self.namespace}",
                python, "-m", "ipyparallel.engine"]

    def close(self) -> None:
        """Remove the namespace; its end of the veth pair goes with it, and so does ours."""
        if self._made:
            remove(self.namespace)
            self._made = False
        subprocess.run(["ip", "link", "del", self.veth_a], capture_output=True, check=False)


def remove(namespace: str) -> None:
    """Remove a namespace; the veth end inside it goes with it, and so does its peer. Used by
    ``close`` and by the watchdog's cleanup after a dead client (which has only the name)."""
    subprocess.run(["ip", "netns", "del", namespace], capture_output=True, check=False)


def _run(*args: str) -> None:
    out = subprocess.run(args, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"cannot make a second host: `{' '.join(args)}` failed: {out.stderr.strip()}")


def _free_subnet() -> str:
    """A 10.213.N prefix no interface of this namespace uses (other sessions' hosts)."""
    out = subprocess.run(["ip", "-o", "-4", "addr"], capture_output=True, text=True, check=False).stdout
    for n in range(1, 255):
        prefix = f"{SUBNET_PREFIX}.{n}"
        if f" {prefix}." not in out:
            return prefix
    raise RuntimeError(f"cannot make a second host: every {SUBNET_PREFIX}.N/24 subnet is in use")
