"""Built-in workloads: a model builder and a data source for each name."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from parakit.config.run import MODEL_OPTIONS, Workload
from parakit.engine.workloads import data
from parakit.engine.workloads.cnn import CNN
from parakit.engine.workloads.gpt import GPT
from parakit.engine.workloads.mlp import MLP


@dataclass(frozen=True)
class BuiltIn:
    build: Callable[..., nn.Module]
    data: Callable[..., Any]


def _gpt(**o: int) -> nn.Module:
    return GPT(vocab_size=data.vocab_size(), **o)


BUILT_INS: dict[Workload, BuiltIn] = {
    Workload.MLP: BuiltIn(MLP, data.mlp_data),
    Workload.CNN: BuiltIn(CNN, data.cnn_data),
    Workload.GPT: BuiltIn(_gpt, data.TextBatches),
}


def options(name: str, given: dict[str, int]) -> dict[str, int]:
    return {**MODEL_OPTIONS[Workload(name)], **given}


def build_model(name: str, given: dict[str, int]) -> nn.Module:
    return BUILT_INS[Workload(name)].build(**options(name, given))


def built_in_data(name: str, given: dict[str, int], seed: int):
    return BUILT_INS[Workload(name)].data(seed, **options(name, given))
