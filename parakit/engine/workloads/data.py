"""Deterministic data made on the engines from a seed; nothing is downloaded.

A run's data is a source of *global* batches: step ``i`` has one global batch, the same at
every world size, and each data-parallel rank takes its slice of rows. Built-in data draws
the rows of a step from a fixed pool, so a rank only gathers its own slice.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

import torch

TEXT_FILE = "tinyshakespeare.txt"  # Shakespeare, public domain; from karpathy/char-rnn


def step_generator(seed: int, step: int) -> torch.Generator:
    # One generator per (seed, step): a step's batch does not depend on what ran before it.
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


class PooledBatches:
    """Global batches drawn with replacement from a pool of examples made once per run."""

    def __init__(self, inputs: torch.Tensor, targets: torch.Tensor, seed: int):
        self.inputs, self.targets, self.seed = inputs, targets, seed

    def rows(self, step: int, global_batch: int, lo: int, hi: int):
        index = torch.randint(0, len(self.inputs), (global_batch,), generator=step_generator(self.seed, step))
        index = index[lo:hi]
        return self.inputs[index], self.targets[index]


def teacher_labels(features: torch.Tensor, classes: int, g: torch.Generator) -> torch.Tensor:
    """Labels from a fixed random linear teacher, so the task is learnable and loss falls."""
    w = torch.randn(features.shape[1], classes, generator=g)
    return (features @ w).argmax(dim=1)


def mlp_data(seed: int, *, in_features: int, classes: int, pool: int = 8192, **_) -> PooledBatches:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(pool, in_features, generator=g)
    return PooledBatches(x, teacher_labels(x, classes, g), seed)


def cnn_data(seed: int, *, classes: int, pool: int = 2048, **_) -> PooledBatches:
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(pool, 3, 32, 32, generator=g)
    coarse = torch.nn.functional.avg_pool2d(images, 8).flatten(1)  # 3 x 4 x 4 features
    return PooledBatches(images, teacher_labels(coarse, classes, g), seed)


@lru_cache(maxsize=1)
def text_tokens() -> tuple[torch.Tensor, str]:
    """The bundled text as character ids, and its alphabet."""
    text = resources.files("parakit.data").joinpath(TEXT_FILE).read_text(encoding="utf-8")
    alphabet = "".join(sorted(set(text)))
    lookup = {ch: i for i, ch in enumerate(alphabet)}
    return torch.tensor([lookup[ch] for ch in text], dtype=torch.long), alphabet


def vocab_size() -> int:
    return len(text_tokens()[1])


class TextBatches:
    """Random windows of the bundled text; targets are the inputs shifted by one character."""

    def __init__(self, seed: int, *, seq_len: int, **_):
        tokens, _alphabet = text_tokens()
        self.windows = tokens.unfold(0, seq_len + 1, 1)  # a view: no copy of the text
        self.seed = seed

    def rows(self, step: int, global_batch: int, lo: int, hi: int):
        index = torch.randint(0, len(self.windows), (global_batch,), generator=step_generator(self.seed, step))
        chunk = self.windows[index[lo:hi]]
        return chunk[:, :-1].contiguous(), chunk[:, 1:].contiguous()
