"""What the instruments measure and over which steps, in-process (no engines): energy and
every per-sample figure cover the same steps as the throughput beside them."""

from __future__ import annotations

import time

import pytest
import torch

from parakit.config.run import RunConfig
from parakit.engine import train as train_module
from parakit.engine.power import PowerMeasurement
from parakit.records.summary import measure
from record_helpers import report
from parakit.records.result import RankInfo, RunResult

EVENTS: list[tuple[str, int | None]] = []


class FakeMeter:
    """A meter that notes where in the run it was started and stopped, and reports 10 J."""

    def __init__(self, device):
        pass

    def begin(self):
        EVENTS.append(("begin", None))
        self.t0 = time.perf_counter()

    def end(self):
        EVENTS.append(("end", None))
        return PowerMeasurement(energy_j=10.0, avg_power_w=10.0 / (time.perf_counter() - self.t0),
                                duration_s=time.perf_counter() - self.t0, scope="package")

    def latest(self):
        return None


def logged_data(step, batch):
    EVENTS.append(("data", step))
    g = torch.Generator().manual_seed(step)
    return torch.randn(batch, 4, generator=g), torch.randint(0, 2, (batch,), generator=g)


def test_the_energy_window_is_the_measured_steps(monkeypatch):
    monkeypatch.setattr(train_module, "PowerMeter", FakeMeter)
    EVENTS.clear()
    config = RunConfig(model=lambda: torch.nn.Linear(4, 2), data=logged_data, strategy="single",
                       steps=6, warmup_steps=2, batch_size=8, live=False)
    out = train_module._train(config)
    assert out.error is None
    order = [name if step is None else step for name, step in EVENTS]
    # data for step s is fetched inside step s: the window opens between the warm-up's last
    # step and the first measured one, and closes after the last step
    assert order == [0, 0, 1, "begin", 2, 3, 4, 5, "end"]  # (the first 0: FLOPs counted on a sample)
    assert out.measured_wall_s > 0 and out.power.energy_j == 10.0


# A fresh run's ranks hold the measurement; a run read back from the store, its JSON dict.
@pytest.mark.parametrize("kept", [PowerMeasurement.from_dict, dict], ids=["fresh", "read-back"])
def test_per_sample_energy_counts_the_measured_steps_only(kept):
    config = RunConfig(model="mlp", strategy="ddp", workers=2, steps=6, warmup_steps=2, batch_size=8)
    power = {"energy_j": 4.0, "avg_power_w": 2.0, "duration_s": 2.0, "samples": [], "scope": "package",
             "reason": None, "overhead_s": 0.0, "power_source": None, "sample_hz_achieved": None,
             "sampled_energy_j": None}
    rank = report(losses=[1.0] * 6, step_time_s=[0.1] * 6, measured_wall_s=0.5, power=power)
    ranks = [RankInfo(rank=k, engine_id=k, pid=k, host="h", device="cpu", device_name="cpu", power=kept(power),
                      power_device="cpu@h") for k in range(2)]
    result = RunResult(run_id="r", status="ok", config=config.describe(), world_size=2, backend="gloo",
                       device_names=["cpu", "cpu"], ranks=ranks)
    measure(result, config, [rank, rank])
    s = result.summary
    assert s["measured_steps"] == 4
    assert s["samples_per_j"] == pytest.approx(8 * 4 / 4.0)  # 4 measured steps of 8 samples, one device
    assert s["wall_samples_per_s"] == pytest.approx(8 * 4 / 0.5)
    assert "warm-up left out" in s["method"]["energy_j"]


def test_a_nan_loss_is_found_and_named_in_the_warnings():
    config = RunConfig(model="mlp", strategy="single", steps=5, warmup_steps=1, batch_size=8)
    rank = report(losses=[2.0, 1.0, float("nan"), float("nan"), float("nan")], step_time_s=[0.1] * 5,
                  measured_wall_s=0.5)
    result = RunResult(run_id="r", status="ok", config=config.describe(), world_size=1, backend=None, device_names=["cpu"])
    measure(result, config, [rank])
    assert result.summary["diverged_at_step"] == 2
    assert result.warnings == ["the loss diverged at step 2 (NaN or infinite); it ran all 5 steps. "
                               "Try a smaller lr (it was 0.001), precision='fp32' or bf16 instead of fp16."]
