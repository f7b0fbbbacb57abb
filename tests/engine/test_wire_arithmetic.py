"""The bytes that compression sends, checked against arithmetic on the model's parameter shapes.

The rules are the ones parakit's hooks follow:
- PowerSGD (torch's hook): a parameter of 2 or more dimensions is a matrix of (first dimension)
  rows by (the rest) columns, sent as P (rows x r) and Q (cols x r), r = min(rank, rows, cols),
  when that saves more than POWERSGD_MIN_RATE times (config/formulas.powersgd_compresses, the
  rule the engine hands torch); anything else (1-D tensors, matrices too small to gain) goes
  uncompressed. The first POWERSGD_START_ITER steps send every gradient as it is. fp32
  throughout: 4 bytes an entry.
- top-k: per gradient bucket of n entries, k = ceil(ratio * n) fp32 values and k int32 indices.

The same arithmetic reproduces the PowerSGD paper's ResNet-18 ratios (Vogels et al., 2019,
Table 3: 243x at rank 1, 136x at rank 2, 72x at rank 4, 11.17M parameters).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from parakit.config.formulas import powersgd_compresses
from parakit.engine.compression import POWERSGD_START_ITER

FP32 = 4


def powersgd_entries(shapes: list[tuple[int, ...]], rank: int, every_matrix: bool = False) -> int:
    """Entries PowerSGD rank ``rank`` all-reduces per step for parameters of these shapes;
    ``every_matrix`` compresses every matrix, as the PowerSGD paper counts."""
    total = 0
    for shape in shapes:
        if len(shape) <= 1:
            total += math.prod(shape)
            continue
        rows, cols = shape[0], math.prod(shape[1:])
        r = min(rank, rows, cols)
        compresses = every_matrix or powersgd_compresses(rows, cols, rank)
        total += (rows + cols) * r if compresses else rows * cols
    return total


def topk_bytes(bucket_entries: list[int], ratio: float) -> int:
    return sum(math.ceil(ratio * n) * (FP32 + 4) for n in bucket_entries)  # values + int32 indices


# -- the PowerSGD paper's ResNet-18, built here (CIFAR-10 form: 3x3 stem, 10 classes) ---------
class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)
        self.conv2, self.bn2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))


def resnet18_shapes() -> list[tuple[int, ...]]:
    layers: list[nn.Module] = [nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64)]
    cin = 64
    for cout, stride in [(64, 1), (128, 2), (256, 2), (512, 2)]:
        layers += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)]
        cin = cout
    layers.append(nn.Linear(512, 10))
    with torch.device("meta"):  # shapes only: no memory, no initialisation
        return [tuple(p.shape) for p in nn.Sequential(*layers).parameters()]


@pytest.mark.parametrize("rank, paper_ratio", [(1, 243), (2, 136), (4, 72)])
def test_the_arithmetic_reproduces_the_powersgd_papers_resnet18_ratios(rank, paper_ratio):
    shapes = resnet18_shapes()
    params = sum(math.prod(s) for s in shapes)
    assert round(params / 1e6, 2) == 11.17
    ratio = params / powersgd_entries(shapes, rank)
    assert round(ratio) == paper_ratio
    # torch's "not worth it" rule never applies to ResNet-18's matrices: the paper's ratios
    # compress every one of them.
    assert powersgd_entries(shapes, rank) == powersgd_entries(shapes, rank, every_matrix=True)


# -- counted bytes of real runs, against the same arithmetic -----------------------------------
class Mixed(nn.Module):
    """Shapes that exercise every rule: a 4-D conv kernel (a 16 x 27 matrix), a large matrix, one
    that gains at rank 1 only (3 x 96), one too small to gain at all (4 x 3), and 1-D biases."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3)  # 16 x 27 matrix + 16 bias
        self.fc = nn.Linear(16 * 6 * 6, 96)  # 96 x 576
        self.narrow = nn.Linear(96, 3)  # 3 x 96: compressed at rank 1, not at rank 4
        self.tiny = nn.Linear(3, 4)  # 4 x 3: too small to gain, sent as it is

    def forward(self, x):
        x = torch.relu(self.conv(x)).flatten(1)
        return self.tiny(torch.relu(self.narrow(torch.relu(self.fc(x)))))


def mixed_data(step, batch):
    g = torch.Generator().manual_seed(step)
    return torch.randn(batch, 3, 8, 8, generator=g), torch.randint(0, 4, (batch,), generator=g)


@pytest.fixture(scope="module")
def runs(session):
    settings = dict(data=mixed_data, strategy="ddp", workers=2, steps=4, warmup_steps=1, batch_size=8)
    return {c: session.run(Mixed, compression=c, **settings) for c in ("powersgd:1", "powersgd:4", "topk:0.05")}


@pytest.mark.parametrize("rank", [1, 4])
def test_powersgd_sends_what_the_arithmetic_says(runs, rank):
    r = runs[f"powersgd:{rank}"]
    assert r.ok, r.error
    shapes = [tuple(p.shape) for p in Mixed().parameters()]
    full = FP32 * sum(math.prod(s) for s in shapes)
    expected = [full] * POWERSGD_START_ITER + [FP32 * powersgd_entries(shapes, rank)] * (4 - POWERSGD_START_ITER)
    for rank_bytes in zip(*(s.rank_comm_bytes for s in r.steps)):
        assert list(rank_bytes) == expected
    assert all(s.rank_uncompressed_bytes == [full, full] for s in r.steps)
    # The rules bite here: the 4 x 3 matrix is sent whole; the 3 x 96 one gains at rank 1
    # (99 entries for 288) but not at rank 4, where it too is sent whole.
    assert powersgd_entries([(4, 3)], rank) == 12
    assert powersgd_entries([(3, 96)], rank) == {1: 99, 4: 288}[rank]


def test_topk_sends_what_the_arithmetic_says(runs):
    r = runs["topk:0.05"]
    assert r.ok, r.error
    entries = sum(p.numel() for p in Mixed().parameters())  # 56k entries: one bucket (DDP's first is 1 MiB)
    assert all(s.rank_comm_bytes == [topk_bytes([entries], 0.05)] * 2 for s in r.steps)
    assert r.summary["compression_ratio"] == pytest.approx(FP32 * entries / topk_bytes([entries], 0.05))
