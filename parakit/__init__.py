"""parakit: see what parallel training does, in Jupyter, on your own hardware."""

from parakit.config import RunConfig
from parakit.records import RunResult
from parakit.session import Session
from parakit.store import load_runs

__all__ = ["RunConfig", "RunResult", "Session", "load_runs"]
__version__ = "0.1.0"
