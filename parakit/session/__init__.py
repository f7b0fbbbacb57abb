"""The facade users hold: a Session starts engines, runs, sweeps and stops; one preflight
decides, before any engine is touched, whether a request fits."""

from parakit.session.session import Session  # noqa: F401

__all__ = ["Session"]
