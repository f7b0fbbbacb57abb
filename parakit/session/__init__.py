"""The facade users hold: a Session starts engines, runs, sweeps and stops; one preflight
decides, before any engine is touched, whether a request fits.

``Session`` is imported on first use, so ``parakit.session.preflight`` checks settings without
importing ipyparallel or torch.
"""

__all__ = ["Session"]


def __getattr__(name: str):
    if name == "Session":
        from parakit.session.session import Session

        return Session
    raise AttributeError(f"module 'parakit.session' has no attribute {name!r}")
