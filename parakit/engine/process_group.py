"""Join and leave the torch.distributed process group that spans the engines."""

from __future__ import annotations

import gc
import os
import socket
from datetime import timedelta

from parakit.engine import flight_recorder, network
from parakit.engine.state import STATE


class StoreSocket:
    """Rank 0's listening socket for the group's store, from ``open_store`` until ``join`` hands
    it to the TCPStore. TCPStore left to bind by itself listens on every interface whatever
    address the group is given, and a port found free first could be taken by someone else
    before it binds."""

    def __init__(self) -> None:
        self._socket: socket.socket | None = None

    def open(self, host: str) -> int:
        """Listen on ``host``; the port. A socket opened before and never joined is closed."""
        self.close()
        sock = socket.socket()
        sock.bind((host, 0))
        sock.listen(128)
        self._socket = sock
        return sock.getsockname()[1]

    def take_fd(self) -> int | None:
        """The listening socket's descriptor, now the caller's to close; None if none is open."""
        sock, self._socket = self._socket, None
        return None if sock is None else sock.detach()

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


_STORE_SOCKET = StoreSocket()
"""This engine's one: engines join one group at a time."""


def open_store(host: str = "127.0.0.1") -> int:
    """On the engine that will be rank 0: listen for the group's store on ``host`` and return
    the port. The store takes this socket over in ``join``."""
    return _STORE_SOCKET.open(host)


def join(rank: int, world_size: int, addr: str, port: int, backend: str, timeout_s: float,
         ifname: str | None = None) -> dict:
    """Leave any group this engine is in, then join a new one as ``rank``; rank 0 serves the
    store on the socket ``open_store`` made. ``ifname`` names the interface between hosts."""
    import torch.distributed as dist

    leave()
    timeout = timedelta(seconds=timeout_s)
    _INTERFACES.choose(addr, ifname)
    flight_recorder.turn_on()  # before the group is made: torch reads the ring's size then
    fd = _STORE_SOCKET.take_fd() if rank == 0 else None
    if fd is not None:
        store = dist.TCPStore(addr, port, world_size, True, timeout, master_listen_fd=fd)
    else:
        store = dist.TCPStore(addr, port, world_size, False, timeout)
    dist.init_process_group(backend, store=store, rank=rank, world_size=world_size, timeout=timeout,
                            device_id=None)
    STATE.rank, STATE.world_size, STATE.backend = rank, world_size, backend
    return {"rank": dist.get_rank(), "world_size": dist.get_world_size(), "backend": backend}


def leave(abort: bool = False) -> None:
    """Leave the process group. ``abort`` closes its connections at once (after a failure), so
    peers blocked in a collective with this rank fail fast instead of waiting out the timeout."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        if abort:
            try:
                dist.distributed_c10d._abort_process_group()  # private: no public abort yet
            except Exception:  # noqa: BLE001 - fall back to a normal destroy
                dist.destroy_process_group()
        else:
            dist.destroy_process_group()
        gc.collect()  # the old group's gloo threads and sockets go now, not at some later GC
    STATE.rank, STATE.world_size, STATE.backend = 0, 1, None


class SocketInterfaces:
    """The interface gloo and NCCL open their own connections on (GLOO_SOCKET_IFNAME,
    NCCL_SOCKET_IFNAME). Left alone, gloo listens where the host name resolves, which may be a
    LAN address (one host) or an address the other hosts cannot reach (a namespace, a login
    network). A variable the user set before parakit was imported is theirs: kept as it is."""

    VARIABLES = ("GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME")

    def __init__(self, environ=os.environ) -> None:
        self._environ = environ
        self.user_set = {v: environ.get(v) for v in self.VARIABLES}
        """Each variable as it was when parakit was imported, before parakit set any."""

    def choose(self, addr: str, ifname: str | None) -> None:
        """Set the variables for a group whose store is at ``addr``; ``ifname`` names the
        interface between hosts (else the one that routes toward ``addr``)."""
        if addr in ("127.0.0.1", "localhost"):
            chosen, variables = _loopback_name(), ["GLOO_SOCKET_IFNAME"]  # NCCL finds its way on one host
        else:
            chosen = ifname or network.interface_with(network.address_toward(addr))
            variables = list(self.VARIABLES)
        for variable in variables:
            if self.user_set[variable] is not None:
                continue
            if chosen:
                self._environ[variable] = chosen
            else:
                self._environ.pop(variable, None)


_INTERFACES = SocketInterfaces()
"""Made at import, so it sees the variables as the user left them."""


def _loopback_name() -> str:
    names = [name for _, name in socket.if_nameindex() if name.startswith("lo")]
    return names[0] if names else "lo"
