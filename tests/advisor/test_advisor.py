"""The advisor: the cost model's formulas on made-up inputs (bubble, alpha-beta, memory, ranking,
projection), its input checks (nothing started), and one real calibrate + verify on 2 CPU
engines with a tiny model."""

import itertools
import math

import pytest

from parakit.advisor.advice import advise, check_request
from parakit.advisor.calibrate import engines_hardware
from parakit.advisor.candidates import candidates, projection, rank
from parakit.advisor.comm import collective_time, gradient_wire, overlapped_exposure
from parakit.advisor.costs import Estimate, estimate
from parakit.advisor.hardware import PRESETS, Hardware, Link, hardware_from
from parakit.advisor.inputs import Calibration
from parakit.config.shape import ModelShape, Part
from parakit.config.run import RunConfig
from parakit.config.levers import Compression
from parakit.records.result import run_label

GIB = 2**30


def blocks_shape(blocks=4, params=1000, flops=1e6) -> ModelShape:
    """A model of equal blocks and nothing else: every stage of an even cut costs the same."""
    parts = tuple(Part(name=f"blocks.{i}", params=params, flops_per_sample=flops, layers=1,
                       saved_bytes_per_sample=1000, output_bytes_per_sample=100, is_block=True)
                  for i in range(blocks))
    starts = {s: tuple(range(blocks // s, blocks, blocks // s)) for s in (2, 4) if blocks % s == 0}
    return ModelShape(name="blocks", parts=parts, matrices=((10, params // 10),) * blocks, stage_starts=starts)


def calibration(**changes) -> Calibration:
    figures = {"device": "cpu", "device_name": "test cpu", "engine_count": 2, "threads_per_rank": 1, "batch_size": 32,
                   "pass_fixed_s": 0.0, "per_row_s": 1e-3, "step_fixed_s": 0.0, "single_step_s": {"fp32": 0.032},
                   "collectives": {"all_reduce": {"alpha_s": 1e-4, "beta_bytes_per_s": 1e9},
                                "all_gather": {"alpha_s": 1e-4, "beta_bytes_per_s": 1e9},
                                "send_recv": {"alpha_s": 1e-5, "beta_bytes_per_s": 1e9}},
                   "memory_bytes": 8 * GIB}
    return Calibration(**{**figures, **changes})


def predict(settings, shape=None, cal=None, hw=None, batch_size=32) -> Estimate:
    shape, cal = shape or blocks_shape(), cal or calibration()
    config = RunConfig(model="gpt", model_options={"depth": len(shape.parts)}, batch_size=batch_size, **settings)
    return estimate(config, shape, cal, hw or engines_hardware(cal, cores=2), settings)


# -- formulas --------------------------------------------------------------------------------
@pytest.mark.parametrize("schedule, m, v", [("gpipe", 4, 1), ("1f1b", 8, 1), ("interleaved", 4, 2)])
def test_pipeline_step_follows_the_bubble_formula(schedule, m, v):
    no_comm = Hardware(name="free links", device="cpu", link=Link(alpha_s=0, bandwidth_bytes_per_s=1e30),
                       calibrated=True, cores=2)
    e = predict({"strategy": "pipeline", "workers": 2, "schedule": schedule, "microbatches": m}, hw=no_comm)
    p = 2
    assert e.bubble == pytest.approx((p - 1) / (v * m + p - 1))
    # each rank computes half the model over the batch: 16 ms; the bubble adds (p-1)/(v m) of it
    busy = 0.032 / p
    assert e.step_time_s == pytest.approx(busy / (1 - e.bubble))


def test_all_reduce_time_is_alpha_plus_bytes_over_bandwidth():
    hw = hardware_from({"peak_tflops": 100, "memory_gib": 10, "alpha_s": 1e-5, "beta_bytes_per_s": 1e10})
    assert collective_time(hw, "all_reduce", 1e8, 2) == pytest.approx(1e-5 + 1e8 / 1e10)
    # 8 ranks: latency of log2(8) steps, each link carries 2 (n-1) / n of the buffer
    assert collective_time(hw, "all_reduce", 1e8, 8) == pytest.approx(3e-5 + 1e8 * 2 * 7 / 8 / 1e10)
    assert collective_time(hw, "all_reduce", 1e8, 1) == 0.0


def test_collectives_beyond_a_node_run_at_the_network_speed():
    ib = PRESETS["h100-ib"]
    inside, across = collective_time(ib, "all_reduce", 1e9, 8), collective_time(ib, "all_reduce", 1e9, 16)
    assert across > 5 * inside  # NVLink ~360 GB/s inside, InfiniBand ~45 GB/s between nodes


def test_measured_fit_converts_to_bus_bandwidth_and_reproduces_the_benchmark():
    cal = calibration()
    hw = engines_hardware(cal, cores=2)
    # at the benchmark's own world size, the time is its fit's alpha + bytes / beta
    assert collective_time(hw, "all_reduce", 4e6, 2) == pytest.approx(1e-4 + 4e6 / 1e9)
    # gloo has no reduce-scatter of its own: it costs an all-reduce of the same buffer
    assert collective_time(hw, "reduce_scatter", 4e6, 2) == pytest.approx(collective_time(hw, "all_reduce", 4e6, 2))


def test_compressions_send_what_their_hooks_send():
    numel, grad = 1_000_000, 4e6
    matrices = ((1000, 1000),)
    plain = gradient_wire(Compression.parse("none"), grad, numel, matrices, 2, 1)
    assert plain.sent_bytes == grad
    assert gradient_wire(Compression.parse("bf16"), grad, numel, matrices, 2, 1).sent_bytes == grad / 2
    assert gradient_wire(Compression.parse("powersgd:4"), grad, numel, matrices, 2, 1).sent_bytes == 4 * 4 * 2000
    topk = gradient_wire(Compression.parse("topk:0.01"), grad, numel, matrices, 2, 1)
    assert topk.sent_bytes == 8 * 10_000 and topk.parts[0][0] == "all_gather"


def test_gpu_buckets_hide_behind_backward_but_not_the_last():
    comm, exposed = overlapped_exposure(1.0, [1.0, 1.0, 1.0], lambda size: 0.1)
    assert comm == pytest.approx(0.3)
    assert exposed == pytest.approx(0.1)  # only the last bucket, ready when backward ends
    gpu = predict({"strategy": "ddp", "workers": 2}, hw=PRESETS["a100-pcie"])
    assert gpu.exposed_comm_time_s < gpu.comm_time_s


def test_memory_that_does_not_fit_says_why_and_fsdp_shards_it():
    big = blocks_shape(params=50_000_000)  # 200 M parameters: 3.2 GB of fp32 state with AdamW
    small = engines_hardware(calibration(memory_bytes=3 * GIB), cores=2)
    ddp = predict({"strategy": "ddp", "workers": 2}, shape=big, hw=small)
    fsdp = predict({"strategy": "fsdp", "workers": 2}, shape=big, hw=small)
    assert not ddp.fits and ddp.reason.startswith("needs ") and "a rank has 3.00 GiB" in ddp.reason
    assert "optimizer" in ddp.reason
    assert fsdp.fits and fsdp.memory["params"] == pytest.approx(ddp.memory["params"] / 2)


def test_ranking_puts_the_fastest_that_fit_first_and_the_rest_last():
    fast, slow = Estimate(settings={"n": 1}, step_time_s=0.1), Estimate(settings={"n": 2}, step_time_s=0.2)
    unfit = Estimate(settings={"n": 3}, step_time_s=0.01, fits=False, reason="needs 9 GiB")
    unknown = Estimate(settings={"n": 4}, fits=False, reason="no peak")
    assert [e.settings["n"] for e in rank([unknown, slow, unfit, fast])] == [1, 2, 3, 4]


def test_projection_gains_less_and_less_as_communication_grows():
    cal, hw = calibration(), PRESETS["h100-ib"]
    shape = blocks_shape(params=10_000_000)
    settings = {"strategy": "ddp", "workers": 2, "precision": "bf16", "compression": "none"}
    base = {"model": "gpt", "model_options": {"depth": 4}, "batch_size": 1024}
    points, stopped = projection(settings, base, 1024, lambda s, c: estimate(c, shape, cal, hw, s))
    assert [p["workers"] for p in points] == [2**k for k in range(11)] and stopped is None
    efficiency = [p["efficiency"] for p in points]
    assert all(a >= b for a, b in itertools.pairwise(efficiency))  # never better with more workers
    assert all(p["speedup"] <= p["workers"] + 1e-9 for p in points)
    assert efficiency[-1] < 0.5  # at 1024 workers the all-reduce outweighs 1 row of compute


def test_candidates_cover_the_layouts_and_refuse_what_cannot_run():
    base = {"model": "gpt", "model_options": {"depth": 4}, "batch_size": 32}
    found, refused = candidates(2, base, ["fp32", "fp16"])
    labels = [run_label(c.settings) for c in found]  # the one run label, as the verifying runs have it
    assert {"ddp x2 powersgd:4", "ddp x2 fp16 grads", "ddp x2 fp16", "fsdp x2", "tensor x2",
            "pipeline x2 interleaved", "pipeline x2 1f1b m8"} <= set(labels)
    assert len(labels) == len(set(labels))  # every candidate reads differently
    assert any("fp16 needs loss scaling" in why for s, why in refused if s["strategy"] == "pipeline")
    assert {run_label(c.settings) for c in candidates(1, base, ["fp32"])[0]} == {"single x1"}


def test_model_shape_and_calibration_round_trip_through_json():
    shape, cal = blocks_shape(), calibration()
    assert ModelShape.from_dict(shape.to_dict()) == shape
    assert Calibration.from_dict(cal.to_dict()) == cal


# -- input checks: one line, nothing started ----------------------------------------------------
@pytest.mark.parametrize("inputs, says", [
    ({"hardware": "h200-nvl"}, "unknown hardware preset 'h200-nvl'; use one of h100-nvlink"),
    ({"workers": 0}, "workers must be an integer from 1 to 1024"),
    ({"workers": 2048}, "workers must be an integer from 1 to 1024"),
    ({"hardware": {"peak_tflops": 400, "memory_gib": 80}}, "hardware needs alpha_s, beta_bytes_per_s"),
    ({"hardware": {"peak_tflops": -1, "memory_gib": 80, "alpha_s": 0, "beta_bytes_per_s": 1}},
     "hardware peak_tflops must be a positive number"),
    ({"hardware": {"flops": 1}}, "hardware has no figure 'flops'"),
    ({"hardware": "a100-pcie", "verify": True}, "use hardware='engines' to verify"),
    ({"strategy": "ddp"}, "advise chooses strategy itself; narrow it with strategies=[...]"),
    ({"precisions": ["fp64"]}, "precision must be one of fp32"),
    ({"project_to": 4096}, "project_to must be at most 1024"),
    ({"batch_sizes": 8}, "unknown setting 'batch_sizes'"),
])
def test_bad_input_is_refused_before_any_engine(inputs, says):
    with pytest.raises(ValueError) as e:
        check_request("gpt", **inputs)
    assert says in str(e.value) and "\n" not in str(e.value)


def test_a_calibration_of_another_model_is_refused():
    with pytest.raises(ValueError, match="this calibration measured 'gpt depth=4', not 'mlp'; calibrate again"):
        advise("mlp", workers=2, calibration=calibration(model="gpt depth=4"))


@pytest.mark.parametrize(("argv", "says"), [
    (["--hardware", "tpu-v5"], "unknown hardware preset 'tpu-v5'"),
    (["--engines", "pbs"], "engines must be one of local, mpi, slurm, ssh, attach"),
    (["--engines", "mpi", "--link", "1gbit"], "link= simulates a network between local engines"),
])
def test_cli_refuses_bad_input_in_one_line(capsys, argv, says):
    from parakit.frontends.cli import main

    assert main(["advise", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"parakit: error: {says}") and "\n" not in err


# -- for real: calibrate on 2 CPU engines, predict, verify -------------------------------------
TINY = {"model_options": {"width": 64, "depth": 3}, "batch_size": 16, "steps": 5}


@pytest.fixture(scope="module")
def advice(session):
    return advise("mlp", workers=2, session=session, verify=True, top=2, project_to=8,
                  precisions=["fp32"], compressions=["none"], strategies=["ddp", "pipeline"], **TINY)


def test_calibrate_verify_and_project_on_two_cpu_engines(session, advice):
    cal = advice.calibration
    assert cal.device == "cpu" and cal.engine_count == 2 and cal.per_row_s >= 0 and cal.single_step_s["fp32"] > 0
    assert {"all_reduce", "send_recv"} <= set(cal.collectives)
    assert advice.best is not None and advice.best.settings["workers"] == 2
    stored = set(session.runs()["run_id"])
    assert len(advice.verified) == 2
    frame = session.runs().set_index("run_id")
    for v in advice.verified:  # each verification is a run in the store, measured and compared
        assert v["run_id"] in stored and v["measured_step_time_s"] > 0
        assert v["error"] == pytest.approx(abs(v["predicted_step_time_s"] / v["measured_step_time_s"] - 1))
        # its measured speed-up is the runs frame's, against the frame's baseline, with its interval
        assert v["speedup"] == pytest.approx(frame.loc[v["run_id"], "speedup"])
        assert v["speedup_low"] < v["speedup"] < v["speedup_high"] and v["verdict"] == frame.loc[v["run_id"], "verdict"]
        assert v["baseline"] == frame.loc[v["run_id"], "baseline"].split(",")
    assert set(cal.runs.values()) <= stored and {"single", "half", "accumulate", "contention"} <= set(cal.runs)
    assert cal.bench_id and not cal.failed
    assert (session.runs_dir / "advice" / f"{advice.advice_id}.json").is_file()
    curve = advice.projections[0]
    assert curve["points"][0]["workers"] == 1 and math.isclose(curve["points"][0]["speedup"], 1.0)
    two = next(p for p in curve["measured"] if p["workers"] == 2)
    assert two["speedup"] == pytest.approx(advice.verification_of(curve["settings"])["speedup"])
    assert "speedup_low" in two and "verdict" in two

    from parakit.frontends.text import advice_table
    from parakit.plots.advisor import projection as projection_figure
    from parakit.plots.advisor import verification

    assert "first choice: " in advice_table(advice)
    assert len(projection_figure(advice).data) >= 4 and verification(advice).data


def test_magic_advises_for_a_preset_on_the_engines_it_has(session):
    from IPython.core.error import UsageError
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "parakit")
    magics = shell.magics_manager.registry["ParakitMagics"]
    with pytest.raises(UsageError, match="unknown hardware preset 'tpu'"):
        shell.run_line_magic("parakit", "advise --hardware tpu")
    assert magics.session is None  # refused before any engine started
    magics.session = session  # the module's engines stand in for %parakit start
    try:
        advice = shell.run_line_magic(
            "parakit", "advise --model mlp --model-option width=64 --model-option depth=3 --batch-size 16 "
                       "--workers 16 --hardware a100-pcie --strategies ddp,fsdp --precisions bf16 --steps 4")
    finally:
        magics.session = None
    assert advice.hardware.name == "a100-pcie" and advice.best.settings["workers"] == 16
    assert advice.projections[0]["points"][-1]["workers"] == 16  # the batch of 16 stops it there


def test_cli_predicts_from_a_saved_calibration_without_engines(session, advice, tmp_path):
    import json
    import os
    import subprocess
    import sys

    saved = session.runs_dir / "advice" / f"{advice.advice_id}.json"
    out = subprocess.run(
        [sys.executable, "-m", "parakit.frontends.cli", "advise", "--model", "mlp", "--model-option", "width=64",
         "--model-option", "depth=3", "--batch-size", "16", "--workers", "64", "--hardware", "h100-ib",
         "--calibration", str(saved), "--runs-dir", str(tmp_path), "--json", "--plot", str(tmp_path / "a.html")],
        check=False, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert out.returncode == 0, out.stderr
    predicted = json.loads(out.stdout)  # stdout is JSON and nothing else
    assert predicted["workers"] == 64 and predicted["hardware"]["name"] == "h100-ib"
    assert predicted["calibration"]["runs"] == advice.calibration.runs
    assert (tmp_path / "a.html").stat().st_size > 1000 and list((tmp_path / "advice").glob("advice-*.json"))


def test_a_calibration_saved_before_engine_count_had_its_name_still_reads():
    saved = {**calibration().to_dict(), "engines": 3}
    del saved["engine_count"]
    assert Calibration.from_dict(saved).engine_count == 3
