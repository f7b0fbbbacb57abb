"""The speed-up rule's edges: switched runs say why they have none, and a chosen baseline must
train the same thing (records/frame.py)."""

import math
from types import SimpleNamespace

import pandas as pd
import pytest

from parakit.records.frame import SWITCHED, add_scaling, speedup_against

SETTINGS = {"strategy": "ddp", "model": "mlp", "precision": "fp32", "batch_size": 64, "status": "ok"}


def test_a_switched_run_gets_no_speedup_and_says_why():
    frame = pd.DataFrame([{**SETTINGS, "run_id": "one", "workers": 1, "samples_per_s": 100.0, "switches": 0},
                          {**SETTINGS, "run_id": "two", "workers": 2, "samples_per_s": 180.0, "switches": 1}])
    out = add_scaling(frame).set_index("run_id")
    assert math.isnan(out.at["two", "speedup"]) and out.at["two", "missing_baseline"] == SWITCHED
    assert out.at["one", "speedup"] == 1.0 and pd.isna(out.at["one", "missing_baseline"])


def run(run_id: str, workers: int, samples_per_s: float, model: str = "mlp"):
    return SimpleNamespace(run_id=run_id, world_size=workers, status="ok", config={"model": model},
                           summary={"samples_per_s": samples_per_s, "within_run_sd": 0.01})


def test_a_chosen_baseline_gives_the_speedup_and_the_efficiency_per_worker_added():
    found, efficiency = speedup_against(run("four", 4, 360.0), run("two", 2, 200.0))
    assert found.ratio == pytest.approx(1.8) and efficiency == pytest.approx(0.9)
    assert found.low < 1.8 < found.high and found.verdict == "faster"


def test_a_chosen_baseline_must_train_the_same_thing():
    with pytest.raises(ValueError, match="baseline run b trains another model \\(gpt\\) than run a \\(mlp\\)"):
        speedup_against(run("a", 2, 180.0), run("b", 1, 100.0, model="gpt"))
