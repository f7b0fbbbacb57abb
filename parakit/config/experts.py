"""Which layouts a mixture-of-experts gpt runs under, and what ``strategy="expert"`` needs of it.
Standard library only, so each mistake is found before an engine is touched.

Under ``expert`` the experts of every block are spread over the ranks (each holds
experts / workers of them, whole), and the rest of the model is replicated under data
parallelism, each rank reading a different slice of the batch (torchtitan's expert parallelism,
borrowed from the data dimension)."""

from __future__ import annotations

from typing import Any

from parakit.config.layouts import Strategy
from parakit.config.memory import Checkpointing
from parakit.config.models import experts_of

MOE_LAYOUTS = (Strategy.SINGLE, Strategy.DDP, Strategy.FSDP, Strategy.EXPERT)
"""Where a mixture of experts runs: a pipeline traces the model with torch.export (the routing's
data-dependent shapes do not trace), and tensor parallelism has no plan for the experts."""


def check_expert_layout(config: Any) -> None:
    """Raise ValueError, in one line, where a run's layout does not fit its experts."""
    moe = experts_of(config.model_options) if isinstance(config.model, str) else None
    if config.strategy is Strategy.EXPERT:
        if moe is None:
            raise ValueError("strategy expert needs a mixture of experts: model='gpt' with "
                             "model_options={'experts': E} (E a multiple of workers)")
        if moe[0] % config.workers:
            raise ValueError(f"strategy expert spreads {moe[0]} experts over {config.workers} workers: use a "
                             f"number of experts that is a multiple of {config.workers}")
    if moe is None:
        return
    if config.strategy not in MOE_LAYOUTS:
        raise ValueError(f"a mixture of experts runs under {', '.join(map(str, MOE_LAYOUTS))}, "
                         f"not {config.strategy}")
    if config.activation_checkpointing is not Checkpointing.NONE:
        raise ValueError("a mixture of experts does not combine with activation_checkpointing yet (the "
                         "recomputation would route and count every token twice)")
