"""Join and leave the torch.distributed process group that spans the engines."""

from __future__ import annotations

import socket
from datetime import timedelta

from parakit.engine.state import STATE


def free_port(host: str = "127.0.0.1") -> int:
    """A port that is free now on this engine's host, for rank 0's store to listen on."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def join(rank: int, world_size: int, addr: str, port: int, backend: str, timeout_s: float) -> dict:
    """Leave any group this engine is in, then join a new one as ``rank``."""
    import torch.distributed as dist

    leave()
    dist.init_process_group(
        backend,
        init_method=f"tcp://{addr}:{port}",
        rank=rank,
        world_size=world_size,
        timeout=timedelta(seconds=timeout_s),
        device_id=None,
    )
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
    STATE.rank, STATE.world_size, STATE.backend = 0, 1, None
