"""Fixtures the engine's tests share."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def group_of_one():
    """A real gloo process group of one rank in this process, so meshes, ddp, fsdp and tensor
    lay a model out here (milliseconds, where spawning ranks takes seconds)."""
    import torch.distributed as dist

    assert not dist.is_initialized()
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    yield
    dist.destroy_process_group()
