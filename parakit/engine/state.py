"""What an engine process knows about itself between runs.

Engines are reused across runs, so this module-level state outlives a single call: the device
the engine was pinned to, and the process group it belongs to (if any).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class EngineState:
    gpu_uuid: str | None = None
    """UUID of the GPU this engine was pinned to; None for a CPU engine."""
    pinned: bool = False
    rank: int = 0
    world_size: int = 1
    backend: str | None = None
    """Backend of the live process group; None when the engine is in none."""


STATE = EngineState()
