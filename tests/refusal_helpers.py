"""What the refusal tests share (tests/session/test_preflight.py, tests/frontends/test_refusals.py):
the check that a message is one line naming its fix, the fixture that fails a test the moment an
engine would start, and what a refusal must leave as it was."""

from __future__ import annotations

import tempfile

import psutil
import pytest
from torch import nn

from parakit.cluster import placement
from parakit.cluster.engines import EngineSet

NO_GPU = not placement.host_facts().gpus
cpu_only = pytest.mark.skipif(not NO_GPU, reason="a machine without a GPU refuses device='cuda'")


def gap(reason: str) -> pytest.MarkDecorator:
    """A case parakit gets wrong today (see docs/reliability.md)."""
    return pytest.mark.xfail(strict=True, reason=reason)


def one_line_naming(message: str, fix: str) -> None:
    assert "\n" not in message.strip(), message
    assert fix in message, message


def own_model():
    return nn.Linear(4, 2)


def own_data(step, global_batch_size):
    import torch

    return torch.randn(global_batch_size, 4), torch.randint(0, 2, (global_batch_size,))


@pytest.fixture
def nothing_starts(monkeypatch, tmp_path):
    """Refuses to start engines (a value that gets through fails the test, at once and with no
    process started) and checks afterwards that no process and no file appeared."""
    def refuse(self, n):
        raise AssertionError(f"a bad value got through: {n} engine(s) were about to start")

    monkeypatch.setattr(EngineSet, "start", refuse)
    scratch = tmp_path / "tmp"  # where a cluster's folder would go
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    runs = tmp_path / "runs"
    children = {p.pid for p in psutil.Process().children()}
    yield runs
    assert {p.pid for p in psutil.Process().children()} <= children
    assert list(scratch.iterdir()) == [] and not runs.exists()


def untouched(session):
    """What a refused setting must leave as it was: engines, their group, the run store."""
    return session._engines.pids(), session._engines.group, sorted(p.name for p in session.runs_dir.rglob("*"))
