"""Join and leave the torch.distributed process group that spans the engines."""

from __future__ import annotations

import gc
import os
import socket
from datetime import timedelta

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


def join(rank: int, world_size: int, addr: str, port: int, backend: str, timeout_s: float) -> dict:
    """Leave any group this engine is in, then join a new one as ``rank``; rank 0 serves the
    store on the socket ``open_store`` made."""
    import torch.distributed as dist

    leave()
    timeout = timedelta(seconds=timeout_s)
    if addr in ("127.0.0.1", "localhost"):
        # gloo's own connections listen where the host name resolves, which may be a LAN address
        os.environ.setdefault("GLOO_SOCKET_IFNAME", _loopback_name())
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


def _loopback_name() -> str:
    names = [name for _, name in socket.if_nameindex() if name.startswith("lo")]
    return names[0] if names else "lo"
