"""The cost model: calibrate on the engines, predict each candidate's step time, memory and
energy, rank them, and verify the best by running them. ``parakit.advise`` is its front door."""

from parakit.advisor.advice import advise  # noqa: F401

__all__ = ["advise"]
