"""What a run is: its settings as frozen dataclasses that check themselves, the strategies' and
levers' vocabularies, the hosts, and the formulas both the engine and the advisor use.

Standard library only, so a mistake in a run's settings is found in the notebook's process,
before an engine is touched. ``from parakit.config import RunConfig, Strategy`` keeps working.
"""

from parakit.config.run import (  # noqa: F401  (the names users import from here)
    MODEL_OPTIONS, Choice, Compression, Device, Hybrid, Precision, RunConfig, Schedule, Strategy, Sync,
    Workload,
)

__all__ = [
    "Choice", "Compression", "Device", "Hybrid", "MODEL_OPTIONS", "Precision", "RunConfig",
    "Schedule", "Strategy", "Sync", "Workload",
]
