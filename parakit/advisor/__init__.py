"""The cost model: calibrate on the engines, predict each candidate's step time, memory and
energy, rank them, and verify the best by running them. ``parakit.advise`` is its front door
(imported on first use: the cost model's pure parts need no torch)."""

__all__ = ["advise"]


def __getattr__(name: str):
    if name == "advise":
        from parakit.advisor.advice import advise

        return advise
    raise AttributeError(f"module 'parakit.advisor' has no attribute {name!r}")
