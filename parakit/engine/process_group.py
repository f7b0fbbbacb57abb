"""Join and leave the torch.distributed process group that spans the engines."""

from __future__ import annotations

import gc
import os
import socket
from datetime import timedelta

from parakit.engine import network
from parakit.engine.state import STATE


def free_port(host: str = "127.0.0.1") -> int:
    """A port that is free now on this engine's host, for rank 0's store to listen on."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


_LISTENING: list[socket.socket] = []  # rank 0's store socket, between open_store and join


def open_store(host: str = "127.0.0.1") -> int:
    """On the engine that will be rank 0: listen for the group's store on ``host`` and return
    the port. The store takes this socket over in ``join``: TCPStore left to bind by itself
    listens on every interface whatever address the group is given, and a port found free
    first could be taken by someone else before it binds."""
    sock = socket.socket()
    sock.bind((host, 0))
    sock.listen(128)
    _LISTENING.append(sock)
    return sock.getsockname()[1]


def join(rank: int, world_size: int, addr: str, port: int, backend: str, timeout_s: float,
         ifname: str | None = None) -> dict:
    """Leave any group this engine is in, then join a new one as ``rank``; rank 0 serves the
    store on the socket ``open_store`` made. ``ifname`` names the interface between hosts."""
    import torch.distributed as dist

    leave()
    timeout = timedelta(seconds=timeout_s)
    _choose_interface(addr, ifname)
    if rank == 0 and _LISTENING:
        fd = _LISTENING.pop().detach()
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


_USER_SET = {v: os.environ.get(v) for v in ("GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME")}


def _choose_interface(addr: str, ifname: str | None) -> None:
    """The interface gloo and NCCL open their own connections on. Left alone, gloo listens where
    the host name resolves, which may be a LAN address (one host) or an address the other
    hosts cannot reach (a namespace, a login network). Set by the user before parakit: kept."""
    if addr in ("127.0.0.1", "localhost"):
        chosen, variables = _loopback_name(), ["GLOO_SOCKET_IFNAME"]  # NCCL finds its way on one host
    else:
        chosen = ifname or network.interface_with(network.address_toward(addr))
        variables = list(_USER_SET)
    for variable in variables:
        if _USER_SET[variable] is not None:
            continue
        if chosen:
            os.environ[variable] = chosen
        else:
            os.environ.pop(variable, None)


def _loopback_name() -> str:
    names = [name for _, name in socket.if_nameindex() if name.startswith("lo")]
    return names[0] if names else "lo"
