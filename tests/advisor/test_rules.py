"""The advisor follows the package's one rule for each figure it shares with runs: the measured
speed-up (the runs frame's, against its baseline, with its interval), the run label, the
devices a configuration is priced for; it states what it assumed; it refuses engine arguments a
session would ignore; and it keeps to its layer (no torch at import, plots never import it).
Hand-built records and a made-up calibration: no engine."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from parakit.advisor.advice import advise
from parakit.advisor.calibrate import engines_hardware
from parakit.advisor.candidates import candidates
from parakit.advisor.costs import GPU_LAYER_PASS_S, PRESET_LOOP_S, Estimate
from parakit.advisor.hardware import PRESET_MFU, PRESETS
from parakit.advisor.method import method_text
from parakit.advisor.pricing import predicted_devices, priced
from parakit.advisor.verify import measured_points, with_speedups
from parakit.config.prices import Prices
from parakit.config.run import RunConfig
from parakit.records.advice import Advice
from parakit.records.result import OK, RankInfo, RunResult, run_label
from parakit.records.run_cost import held_devices
from parakit.records.store import runs_frame
from parakit.records.summary_fields import Summary
from parakit.session.progress import ProgressPrinter

from test_advisor import blocks_shape, calibration

BATCH = 32
DDP2 = {"strategy": "ddp", "workers": 2, "precision": "fp32", "compression": "none"}


def run(run_id: str, samples_per_s: float, **settings) -> RunResult:
    """An ok CPU run of the built-in mlp, as the session records it."""
    config = {"model": "mlp", "model_options": {}, "batch_size": BATCH, "precision": "fp32", "compression": "none",
              **settings}
    return RunResult(run_id=run_id, status=OK, config=config, world_size=config["workers"], backend="gloo",
                     device_names=["cpu"] * config["workers"],
                     summary=Summary(samples_per_s=samples_per_s, step_time_s=BATCH / samples_per_s))


# -- measured speed-up: the runs frame's rule -----------------------------------------------------
def test_a_verified_run_has_the_runs_frames_speedup_not_one_against_the_calibration():
    single = run("cal-single", 100.0, strategy="single", workers=1)  # the calibration's single run
    ddp_one = run("cal-ddp", 80.0, strategy="ddp", workers=1)  # its one-worker ddp run: the frame's baseline
    verified = run("verified", 120.0, **{k: v for k, v in DDP2.items() if k != "precision"})
    cal = calibration(single_step_s={"fp32": BATCH / 100.0}, runs={"single": "cal-single", "ddp:none": "cal-ddp"})
    entry = {"label": run_label(DDP2), "settings": DDP2, "predicted_step_time_s": 0.2,
             "measured_step_time_s": BATCH / 120.0, "run_id": "verified", "status": OK, "error": 0.0}
    [found] = with_speedups([entry], [single, ddp_one, verified])
    row = runs_frame([single, ddp_one, verified]).set_index("run_id").loc["verified"]
    assert found["speedup"] == pytest.approx(row["speedup"]) == pytest.approx(1.5)  # 120 / 80, not 120 / 100
    assert (found["speedup_low"], found["speedup_high"]) == pytest.approx((row["speedup_low"], row["speedup_high"]))
    assert found["verdict"] == row["verdict"] and found["baseline"] == ["cal-ddp"]
    dots = measured_points(DDP2, cal, engines_hardware(cal, cores=2), [found])
    assert [(d["workers"], d["run_id"]) for d in dots] == [(1, "cal-ddp"), (2, "verified")]
    assert [d["speedup"] for d in dots] == pytest.approx([1.0, 1.5])
    assert dots[1]["speedup_low"] < 1.5 < dots[1]["speedup_high"]
    from parakit.plots.advisor import projection  # the figure draws that interval as the point's error bar

    points = [{"workers": n, "step_time_s": 0.1, "samples_per_s": 320.0 * n, "speedup": n, "efficiency": 1.0}
              for n in (1, 2)]
    advice = Advice(advice_id="a", created_at="", workers=2, hardware=PRESETS["h100-ib"], shape=blocks_shape(),
                    calibration=cal, estimates=[], verified=[found],
                    projections=[{"label": "ddp", "settings": DDP2, "points": points, "stopped": None, "measured": dots}])
    measured = next(t for t in projection(advice).data if t.name == "ddp (measured)")
    assert measured.error_y.visible and measured.error_y.array[1] == pytest.approx(dots[1]["speedup_high"] - 1.5)


def test_a_verified_run_without_a_baseline_says_which_run_is_missing():
    lone = run("lone", 120.0, strategy="ddp", workers=2, precision="bf16")
    entry = {"settings": {**DDP2, "precision": "bf16"}, "measured_step_time_s": 0.1, "run_id": "lone"}
    [found] = with_speedups([entry], [lone])
    assert "speedup" not in found and found["missing_baseline"].startswith("a 1-worker ddp (or single) run")


# -- labels: the one run label; verification matched by settings --------------------------------
def test_candidates_and_progress_read_as_the_one_run_label():
    config = RunConfig(model="mlp", strategy="pipeline", workers=2, schedule="1f1b", microbatches=8, batch_size=16)
    assert ProgressPrinter(config, stream=None).label == run_label(config.describe(), 2) == "pipeline x2 mlp 1f1b m8"
    found, _ = candidates(2, {"model": "mlp", "batch_size": 32}, ["fp32"], strategies=["pipeline"])
    for c in found:  # a candidate reads as the run that verifies it, less the model all of them share
        assert run_label({**c.config.describe(), "model": None}, 2) == run_label(c.settings)


def test_verification_is_matched_to_its_candidate_by_settings_not_by_label():
    plain, halved = {**DDP2}, {**DDP2, "compression": "fp16"}
    estimates = [Estimate(settings=s, step_time_s=0.1, samples_per_s=320.0, memory_bytes=1.0) for s in (plain, halved)]
    # a verification whose label is stale (an older label of the plain one) but whose settings are the halved one's
    seen = {"label": run_label(plain), "settings": halved, "predicted_step_time_s": 0.1, "measured_step_time_s": 0.2,
            "run_id": "r", "status": OK, "error": 0.5}
    advice = Advice(advice_id="a", created_at="", workers=2, hardware=PRESETS["h100-ib"], shape=blocks_shape(),
                    calibration=calibration(), estimates=estimates, verified=[seen])
    measured = dict(zip(advice.frame()["configuration"], advice.frame()["measured_step_time_ms"]))
    assert measured[run_label(halved)] == pytest.approx(200.0) and measured[run_label(plain)] != measured[run_label(plain)]
    assert advice.verification_of(halved) is seen and advice.verification_of(plain) is None


# -- devices counted for cost: the run cost rule -----------------------------------------------
def rank(i: int, device: str = "cpu", gpu_index=None, threads=None, name="test cpu") -> RankInfo:
    return RankInfo(rank=i, engine_id=i, pid=100 + i, host="box", device=device, device_name=name,
                    gpu_index=gpu_index, threads=threads)


@pytest.mark.parametrize("ranks, threads, cores", [(2, 1, 2), (8, 1, 4)])  # 8 engines share 4 cores
def test_a_prediction_and_its_verifying_run_are_priced_with_the_same_cpu_cores(ranks, threads, cores):
    cal = calibration(threads_per_rank=threads, engine_count=ranks)
    hw = engines_hardware(cal, cores=cores)
    held, why = held_devices([rank(i, threads=threads) for i in range(ranks)])  # the verifying run, as recorded
    assert why is None and predicted_devices(hw, cal, ranks) == sum(held.values()) == ranks * threads
    [costed], _ = priced([Estimate(settings={"workers": ranks}, step_time_s=0.1, samples_per_s=1000.0)], hw, cal,
                         Prices(cpu_core_hour_usd=3.6))
    assert costed.cost_per_1k_samples_usd == pytest.approx(0.001 * sum(held.values()))  # 1 s at $0.001 a core-second


def test_engines_sharing_a_gpu_are_priced_for_it_once_as_their_run_is():
    name = "NVIDIA H100 80GB HBM3"
    held, _ = held_devices([rank(i, "cuda:0", gpu_index=0, name=name) for i in range(2)])
    hw = engines_hardware(calibration(device="gpu", device_name=name), cores=16)
    assert predicted_devices(hw, calibration(), 2, gpus=1) == sum(held.values()) == 1
    assert predicted_devices(hw, calibration(), 2) == 2  # a GPU per rank where none are shared (presets)
    [costed], _ = priced([Estimate(settings={"workers": 2}, step_time_s=0.1, samples_per_s=1000.0)], hw,
                         calibration(), Prices(device_hour_usd=3.6), gpus=1)
    assert costed.cost_per_1k_samples_usd == pytest.approx(0.001)


# -- advise(session=...): engine arguments are the session's ---------------------------------------
class Untouched:
    """A session that fails the test if anything but its run store is read."""

    runs_dir = "/tmp/parakit-runs-of-the-session"

    def __getattr__(self, name):
        raise AssertionError(f"the session's {name} was touched")


@pytest.mark.parametrize("given, named", [
    ({"device": "cpu"}, "device"), ({"gpus": [0], "engines": "mpi"}, "engines, gpus"),
    ({"progress": False}, "progress"), ({"runs_dir": "elsewhere"}, "runs_dir"),
])
def test_engine_arguments_with_a_session_are_refused_before_it_is_touched(given, named):
    with pytest.raises(ValueError) as e:
        advise("mlp", session=Untouched(), **given)
    assert str(e.value).startswith(f"session= brings its own engines and run store, so {named} would be ignored")
    assert "\n" not in str(e.value)


def test_the_sessions_own_run_store_is_not_a_conflict():
    with pytest.raises(AssertionError, match="preflight was touched"):  # past the check, on to the session
        advise("mlp", session=Untouched(), runs_dir=Untouched.runs_dir)


# -- what the advice assumed ------------------------------------------------------------------
def test_the_method_names_each_assumed_constant_where_a_prediction_uses_it(tmp_path):
    kwargs = dict(calibration=calibration(model="mlp"), runs_dir=tmp_path, strategies=["ddp"], compressions=["none"],
                  precisions=["fp32"])
    preset = advise("mlp", workers=8, hardware="h100-ib", **kwargs)  # a CPU calibration: by FLOPs
    for named in (f"PRESET_MFU = {PRESET_MFU:g}", f"GPU_LAYER_PASS_S = {GPU_LAYER_PASS_S:g} s",
                  f"PRESET_LOOP_S = {PRESET_LOOP_S:g} s", "BACKWARD_SHARE = 0.667"):
        assert named in preset.method, named
    assert f"method: {preset.method}" in preset.summary() and preset.to_dict()["method"] == preset.method
    engines = advise("mlp", workers=2, **kwargs)  # the engines themselves: all as measured
    assert engines.method == "compute from the engines' own calibration runs, as measured; no assumed constants"
    scaled = method_text(calibration(device="gpu", peak_tflops={"fp32": 60.0}), PRESETS["h100-ib"], [])
    assert f"PRESET_LOOP_S = {PRESET_LOOP_S:g} s" in scaled and "PRESET_MFU" not in scaled


# -- layers -----------------------------------------------------------------------------------
def test_importing_the_advisor_does_not_import_torch():
    code = "import sys, parakit.advisor.advice, parakit.advisor.record\nprint('torch' in sys.modules)\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_plots_import_no_layer_above_records_and_the_advice_is_one_record():
    import parakit.advisor.record

    plots = Path(__file__).resolve().parents[2] / "parakit" / "plots"
    for path in plots.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module] if isinstance(node, ast.ImportFrom) and node.module else \
                [a.name for a in node.names] if isinstance(node, ast.Import) else []
            for name in (n for n in names if n.startswith("parakit")):
                # records, and what records stand on (config): never the advisor, nor any engine
                assert name.startswith(("parakit.records", "parakit.config", "parakit.plots")), f"{path.name}: {name}"
    assert parakit.advisor.record.Advice is Advice  # older imports find the same record
