"""Strategies: one module each, chosen through a dict from the Strategy enum. Each takes the
built model and a Context and returns a Parallel: what this rank holds and how it steps.

A strategy's module is imported when a run first asks for it: FSDP, DTensor and pipelining
(with dynamo) are 1.6 s of imports on a 2-core CPU, which an engine's first ddp run, and so
every session's start-up, need not wait for.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from importlib import import_module

from torch import nn

from parakit.config.run import Strategy
from parakit.engine.strategies.base import Context, Parallel

Apply = Callable[[nn.Module, Context], Parallel]

# Strategy -> (module in this package, its apply function)
_WHERE: dict[Strategy, tuple[str, str]] = {
    Strategy.SINGLE: ("single", "apply_single"),
    Strategy.DDP: ("ddp", "apply_ddp"),
    Strategy.FSDP: ("fsdp", "apply_fsdp"),
    Strategy.PIPELINE: ("pipeline", "apply_pipeline"),
    Strategy.TENSOR: ("tensor", "apply_tensor"),
    Strategy.HYBRID: ("hybrid", "apply_hybrid"),
}


class _OnFirstUse(Mapping[Strategy, Apply]):
    """The dict from Strategy to apply function, importing each module when it is looked up."""

    def __getitem__(self, strategy: Strategy) -> Apply:
        module, name = _WHERE[strategy]
        return getattr(import_module(f"{__name__}.{module}"), name)

    def __iter__(self) -> Iterator[Strategy]:
        return iter(_WHERE)

    def __len__(self) -> int:
        return len(_WHERE)


APPLY: Mapping[Strategy, Apply] = _OnFirstUse()

__all__ = ["APPLY", "Context", "Parallel"]
