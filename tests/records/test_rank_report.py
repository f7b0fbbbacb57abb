"""What a rank sends back (RankReport), in-process (no engines): built by the loop, read by
attribute in the summary, and progress messages that fail are counted and warned of once."""

from __future__ import annotations

import pickle

import ipyparallel.datapub
import pytest
from ipykernel.zmqshell import ZMQInteractiveShell

from parakit.config.run import RunConfig
from parakit.engine import publish as publish_module
from parakit.engine.train import _train
from record_helpers import report
from parakit.records.rank import RankReport, rank_info
from parakit.records.result import RunResult
from parakit.records.summary import flops_summary, measure


def measured(*reports: RankReport, steps: int = 4) -> RunResult:
    config = RunConfig(model="mlp", strategy="ddp" if len(reports) > 1 else "single", workers=len(reports),
                       steps=steps, warmup_steps=1, batch_size=8)
    result = RunResult(run_id="r", status="ok", config=config.describe(), world_size=len(reports), backend=None,
                       device_names=["cpu"] * len(reports))
    measure(result, config, list(reports))
    return result


def test_the_loop_reports_by_attribute_and_the_report_travels_pickled(monkeypatch):
    # Not an engine, whatever shell an earlier test of this process made: publishing is a no-op.
    monkeypatch.setattr(ZMQInteractiveShell, "initialized", lambda: False)
    config = RunConfig(model="mlp", strategy="single", steps=4, warmup_steps=1, batch_size=8)
    out = _train(config)
    assert isinstance(out, RankReport) and out.error is None and not out.stopped_early
    assert len(out.losses) == len(out.step_time_s) == 4 and out.param_bytes > 0
    assert out.progress_messages >= 2 and out.progress_failures == 0  # the first and the last step
    assert out.power_device.startswith("cpu@") and out.no_peak_reason.startswith("no peak FLOP/s for CPUs")
    assert pickle.loads(pickle.dumps(out)) == out  # as ipyparallel sends it back


def test_a_progress_message_that_cannot_be_sent_is_counted_not_raised(monkeypatch):
    def broken(_message):
        raise OSError("the engine's connection to the client is gone")

    monkeypatch.setattr(ZMQInteractiveShell, "initialized", lambda: True)  # as inside an engine
    monkeypatch.setattr(ipyparallel.datapub, "publish_data", broken)
    assert publish_module.publish({"step": 1}) is False
    out = _train(RunConfig(model="mlp", strategy="single", steps=3, warmup_steps=1, batch_size=8))
    assert out.error is None and len(out.losses) == 3  # the run went on
    assert out.progress_failures == out.progress_messages >= 2


def test_progress_failures_make_one_warning_naming_the_ranks():
    result = measured(report(rank=0, progress_failures=3, losses=[1.0] * 4, step_time_s=[0.1] * 4),
                      report(rank=1, losses=[1.0] * 4, step_time_s=[0.1] * 4))
    warning = "progress messages failed 3 time(s) on rank(s) 0; the live progress missed them, the run itself is unaffected"
    assert result.warnings == [warning]
    measure(result, RunConfig(model="mlp", steps=4, warmup_steps=1, batch_size=8), [report(progress_failures=3)])
    assert result.warnings == [warning]  # measured again: still once
    assert measured(report(losses=[1.0] * 4, step_time_s=[0.1] * 4)).warnings == []


def test_steps_merge_the_ranks_reports():
    first = report(rank=0, losses=[2.0, 1.0], step_time_s=[0.1, 0.3], comm_bytes=[10, 20],
                   uncompressed_bytes=[40, 40], compute_time_s=[None, 0.2], comm_time_s=[None, 0.1],
                   exposed_comm_time_s=[None, 0.05], idle_time_s=[None, 0.05])
    second = report(rank=1, losses=[4.0, 3.0], step_time_s=[0.2, 0.2], comm_bytes=[12, 22],
                    uncompressed_bytes=[40, 40], compute_time_s=[None, 0.1], comm_time_s=[None, 0.1],
                    exposed_comm_time_s=[None, 0.0], idle_time_s=[None, 0.1])
    steps = measured(first, second, steps=2).steps
    assert [s.loss for s in steps] == [3.0, 2.0] and [s.step_time_s for s in steps] == [0.2, 0.3]
    assert steps[1].rank_comm_bytes == [20, 22] and steps[1].rank_compute_time_s == [0.2, 0.1]
    assert steps[0].rank_compute_time_s is None  # not recorded on that step


def test_flops_and_the_rank_info_when_a_rank_sent_nothing():
    figures, why = flops_summary(None, 0.1, 2)
    assert figures == {"flops_per_step": None, "tflops_per_device": None, "mfu": None}
    assert why == {"flops_per_step": "FLOPs were not counted", "mfu": "FLOPs were not counted"}
    counted, _ = flops_summary(report(flops_per_step=1e12, peak_flops_per_s=1e14), 0.1, 2)
    assert counted["mfu"] == pytest.approx(1e12 / 0.1 / 2 / 1e14)
    where = dict(rank=1, engine_id=3, pid=9, host="h", device="cpu", device_name="cpu")
    assert rank_info(None, **where).param_bytes is None
    kept = rank_info(report(param_bytes=64, power_device="cpu@h", stages=[1]), **where)
    assert (kept.engine_id, kept.param_bytes, kept.power_device, kept.stages) == (3, 64, "cpu@h", [1])

