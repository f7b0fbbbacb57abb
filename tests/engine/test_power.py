"""The power meter, with NVML faked (autospec on the real pynvml) and RAPL faked by a powercap
tree in tmp_path, so no GPU and no root are needed."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from types import SimpleNamespace
from unittest import mock

import pynvml
import pytest

from parakit.engine import gpus, power
from parakit.engine.power import PowerMeter
from parakit.engine.state import STATE
from parakit.records.power import PowerMeasurement
from parakit.records.rank import rank_info
from record_helpers import report

WATTS = {"handle0": 100.0, "handle1": 300.0}  # two GPUs told apart by their power
UUIDS = {"handle0": b"GPU-aaaa", "handle1": "GPU-bbbb"}  # NVML may answer bytes or str
NVML_CALLS = [
    "nvmlInit", "nvmlShutdown", "nvmlDeviceGetCount", "nvmlDeviceGetHandleByIndex",
    "nvmlDeviceGetUUID", "nvmlDeviceGetFieldValues", "nvmlDeviceGetPowerUsage",
    "nvmlDeviceGetTotalEnergyConsumption", "nvmlDeviceGetUtilizationRates", "nvmlDeviceGetMemoryInfo",
]
WINDOW_S = 0.12


def field_value(milliwatts: int, status: int = pynvml.NVML_SUCCESS):
    """A real nvmlFieldValue_t, as nvmlDeviceGetFieldValues returns it."""
    v = pynvml.c_nvmlFieldValue_t()
    v.fieldId, v.nvmlReturn = pynvml.NVML_FI_DEV_POWER_INSTANT, status
    v.valueType, v.value.uiVal = pynvml.NVML_VALUE_TYPE_UNSIGNED_INT, milliwatts
    return v


@pytest.fixture
def nvml(monkeypatch):
    """Two GPUs; instant power, energy counter, utilisation and memory all supported."""
    monkeypatch.setattr(gpus, "NVML", gpus.NvmlSession())  # NVML not opened yet, as in a new engine
    with mock.patch.multiple(pynvml, autospec=True, **{name: mock.DEFAULT for name in NVML_CALLS}) as m:
        m["nvmlDeviceGetCount"].return_value = 2
        m["nvmlDeviceGetHandleByIndex"].side_effect = lambda i: f"handle{i}"
        m["nvmlDeviceGetUUID"].side_effect = lambda h: UUIDS[h]
        m["nvmlDeviceGetFieldValues"].side_effect = lambda h, ids: [field_value(int(WATTS[h] * 1e3))]
        m["nvmlDeviceGetPowerUsage"].side_effect = lambda h: int(WATTS[h] * 1e3) - 50_000
        m["nvmlDeviceGetTotalEnergyConsumption"].return_value = 1_000_000
        m["nvmlDeviceGetUtilizationRates"].return_value = pynvml.c_nvmlUtilization_t(gpu=87, memory=40)
        m["nvmlDeviceGetMemoryInfo"].return_value = pynvml.c_nvmlMemory_t(used=5 * 2**30)
        yield SimpleNamespace(**m)


def measure(meter: PowerMeter, seconds: float = WINDOW_S):
    meter.begin()
    time.sleep(seconds)
    return meter.end()


# --- GPU -----------------------------------------------------------------------------------

@pytest.mark.parametrize("code", [pynvml.NVML_ERROR_LIBRARY_NOT_FOUND, pynvml.NVML_ERROR_DRIVER_NOT_LOADED])
def test_no_gpu_means_none_with_reason(nvml, code):
    nvml.nvmlInit.side_effect = pynvml.NVMLError(code)
    m = measure(PowerMeter("cuda:0", uuid="GPU-aaaa"), 0.01)
    assert (m.energy_j, m.avg_power_w, m.samples, m.power_source) == (None, None, [], None)
    assert m.reason == f"NVML is not available ({pynvml.NVMLError(code)})"
    assert m.scope == power.SCOPE_GPU and m.duration_s > 0


def test_pynvml_not_installed_means_none_with_reason(monkeypatch):
    monkeypatch.setattr(gpus, "NVML", gpus.NvmlSession())
    monkeypatch.setitem(sys.modules, "pynvml", None)
    m = measure(PowerMeter("cuda", uuid="GPU-aaaa"), 0.01)
    assert m.energy_j is None and "pynvml is not installed" in m.reason


def test_cuda_engine_not_pinned_means_none_with_reason(nvml, monkeypatch):
    monkeypatch.setattr(STATE, "gpu_uuid", None)
    m = measure(PowerMeter("cuda:0"), 0.01)
    assert m.energy_j is None and "not pinned to a GPU" in m.reason


def test_unknown_uuid_names_what_nvml_sees(nvml):
    m = measure(PowerMeter("cuda:0", uuid="GPU-cccc"), 0.01)
    assert m.energy_j is None
    assert m.reason == "no NVML device has UUID GPU-cccc (NVML sees 0: GPU-aaaa, 1: GPU-bbbb)"


def test_energy_is_the_counter_difference_not_the_sample_integral(nvml):
    nvml.nvmlDeviceGetTotalEnergyConsumption.side_effect = [1_000_000, 1_050_000]  # mJ
    m = measure(PowerMeter("cuda:0", uuid="GPU-aaaa"))
    assert m.energy_j == 50.0
    assert m.avg_power_w == pytest.approx(50.0 / m.duration_s)
    # The samples say 100 W throughout: their integral is a different, clearly named figure.
    span_s = m.samples[-1][0] - m.samples[0][0]
    assert m.sampled_energy_j == pytest.approx(100.0 * span_s)
    assert m.sampled_energy_j != pytest.approx(50.0)
    assert nvml.nvmlDeviceGetTotalEnergyConsumption.call_count == 2
    assert m.reason is None and m.power_source == power.POWER_INSTANT


def test_a_meter_measures_window_after_window(nvml):
    nvml.nvmlDeviceGetTotalEnergyConsumption.side_effect = [0, 10_000, 20_000, 50_000]
    meter = PowerMeter("cuda:0", uuid="GPU-aaaa")
    first, second = measure(meter, 0.06), measure(meter, 0.06)
    assert (first.energy_j, second.energy_j) == (10.0, 30.0)
    assert all(s[0] < second.duration_s for s in second.samples)  # times restart at each begin


def test_no_energy_counter_leaves_energy_none_but_samples(nvml):
    nvml.nvmlDeviceGetTotalEnergyConsumption.side_effect = pynvml.NVMLError_NotSupported()
    m = measure(PowerMeter("cuda:0", uuid="GPU-aaaa"))
    assert m.energy_j is None and m.avg_power_w is None
    assert "no energy counter" in m.reason and "Not Supported" in m.reason
    assert len(m.samples) >= 2 and all(s[1] == 100.0 for s in m.samples)
    assert m.sampled_energy_j > 0


@pytest.mark.parametrize("uuid", ["GPU-bbbb", "bbbb", "gpu-BBBB"])  # NVML's, torch's, any case
def test_renumbered_device_reads_the_pinned_uuid_not_index_0(nvml, uuid):
    # CUDA_VISIBLE_DEVICES=GPU-bbbb: torch calls it cuda:0, NVML still calls it index 1.
    nvml.nvmlDeviceGetTotalEnergyConsumption.side_effect = lambda h: {"handle0": 0, "handle1": 7_000}[h]
    m = measure(PowerMeter("cuda:0", uuid=uuid))
    assert m.samples and all(s[1] == 300.0 for s in m.samples)
    for call in [nvml.nvmlDeviceGetFieldValues, nvml.nvmlDeviceGetTotalEnergyConsumption,
                 nvml.nvmlDeviceGetUtilizationRates, nvml.nvmlDeviceGetMemoryInfo]:
        assert {c.args[0] for c in call.call_args_list} == {"handle1"}


def test_uuid_defaults_to_the_engines_pinned_gpu(nvml, monkeypatch):
    monkeypatch.setattr(STATE, "gpu_uuid", "GPU-bbbb")
    m = measure(PowerMeter("cuda:0"))
    assert m.samples and m.samples[0][1] == 300.0


@pytest.mark.parametrize("unsupported", ["field status", "call raises"])
def test_instant_field_unsupported_falls_back_to_power_usage(nvml, unsupported):
    if unsupported == "field status":  # the call succeeds, the field carries its own error
        nvml.nvmlDeviceGetFieldValues.side_effect = lambda h, ids: [field_value(0, pynvml.NVML_ERROR_NOT_SUPPORTED)]
    else:  # an old driver without the field API
        nvml.nvmlDeviceGetFieldValues.side_effect = pynvml.NVMLError_FunctionNotFound()
    m = measure(PowerMeter("cuda:0", uuid="GPU-aaaa"))
    assert m.power_source == power.POWER_USAGE
    assert m.samples and all(s[1] == 50.0 for s in m.samples)  # 100 W - 50 W: the fallback's figure


def test_no_power_reading_at_all_keeps_the_energy(nvml):
    nvml.nvmlDeviceGetFieldValues.side_effect = pynvml.NVMLError_NotSupported()
    nvml.nvmlDeviceGetPowerUsage.side_effect = pynvml.NVMLError_NotSupported()
    nvml.nvmlDeviceGetTotalEnergyConsumption.side_effect = [2_000, 4_000]
    m = measure(PowerMeter("cuda:0", uuid="GPU-aaaa"), 0.02)
    assert m.energy_j == 2.0 and m.samples == [] and m.power_source is None
    assert m.reason.startswith("no power samples")


def test_samples_at_20_hz_carry_utilisation_and_memory(nvml):
    m = measure(PowerMeter("cuda:0", uuid="GPU-aaaa"), 0.3)
    assert m.sample_hz_achieved >= 10
    assert len(m.samples) >= 4
    times = [s[0] for s in m.samples]
    assert times == sorted(times) and 0 <= times[0] and times[-1] <= m.duration_s
    assert m.samples[0][1:] == (100.0, 87.0, 5 * 2**30)
    assert 0 <= m.overhead_s < m.duration_s


def test_utilisation_not_supported_is_none_and_not_asked_again(nvml):
    nvml.nvmlDeviceGetUtilizationRates.side_effect = pynvml.NVMLError_NotSupported()
    m = measure(PowerMeter("cuda:0", uuid="GPU-aaaa"))
    assert len(m.samples) >= 2 and all(s[1:] == (100.0, None, 5 * 2**30) for s in m.samples)
    assert nvml.nvmlDeviceGetUtilizationRates.call_count == 1
    assert m.reason is None  # nothing the window reports is missing


def test_nvml_error_mid_run_ends_sampling_not_training(nvml):
    calls = iter(range(10**6))

    def failing_third_sample(h, ids):  # call 0 is the probe in the constructor
        if next(calls) >= 3:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)
        return [field_value(100_000)]

    nvml.nvmlDeviceGetFieldValues.side_effect = failing_third_sample
    m = measure(PowerMeter("cuda:0", uuid="GPU-aaaa", sample_hz=100), 0.1)
    assert len(m.samples) == 2
    assert "sampling stopped" in m.reason and "GPU is lost" in m.reason
    assert m.energy_j == 0.0  # the counter still answers: energy is unaffected


def test_sampler_is_a_daemon_and_stops_at_once(nvml):
    meter = PowerMeter("cuda:0", uuid="GPU-aaaa", sample_hz=10)  # 100 ms between samples
    meter.begin()
    (sampler,) = [t for t in threading.enumerate() if t.name == "parakit-power-sampler"]
    assert sampler.daemon
    started = time.perf_counter()
    meter.end()
    # The stop event wakes it mid-wait: a sleep would hold end() for most of the 100 ms.
    assert time.perf_counter() - started < 0.06
    assert not sampler.is_alive()


def test_nvml_is_initialised_once_and_never_shut_down(nvml):
    for _ in range(2):
        measure(PowerMeter("cuda:0", uuid="GPU-aaaa"), 0.01)
    assert nvml.nvmlInit.call_count == 1
    nvml.nvmlShutdown.assert_not_called()


def test_listing_gpus_while_a_meter_samples_shares_its_nvml(nvml, monkeypatch):
    import torch

    monkeypatch.setattr(torch.backends.cuda, "is_built", lambda: True)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    meter = PowerMeter("cuda:0", uuid="GPU-aaaa")
    meter.begin()
    listed, reason = gpus.visible_gpus()  # placement asks while the sampler thread reads
    m = meter.end()
    assert [g.uuid for g in listed] == ["GPU-aaaa", "GPU-bbbb"] and reason is None
    # One init, kept by the meters; the listing's use was counted and given back, not shut down.
    assert (nvml.nvmlInit.call_count, nvml.nvmlShutdown.call_count) == (1, 0)
    assert gpus.NVML.users == 1
    assert m.reason is None and m.samples  # the sampler never lost NVML
    # Without a meter holding it, a listing inits and shuts down once each: balanced.
    monkeypatch.setattr(gpus, "NVML", gpus.NvmlSession())
    gpus.visible_gpus()
    assert (nvml.nvmlInit.call_count, nvml.nvmlShutdown.call_count) == (2, 1)
    assert gpus.NVML.users == 0


# --- CPU: RAPL -----------------------------------------------------------------------------

MAX_RANGE_UJ = 262_143_328_850


def write_atomically(path, value: int) -> None:
    """The sampler reads concurrently: never let it see a half-written file."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f"{value}\n")
    os.replace(tmp, path)


@pytest.fixture
def powercap(tmp_path):
    """Two packages and one subdomain (which must be ignored), as the kernel lays them out."""
    for name, energy_uj in [("intel-rapl:0", MAX_RANGE_UJ - 1_000_000), ("intel-rapl:1", 5_000_000),
                            ("intel-rapl:0:0", 9_000_000)]:
        d = tmp_path / name
        d.mkdir()
        write_atomically(d / "energy_uj", energy_uj)
        write_atomically(d / "max_energy_range_uj", MAX_RANGE_UJ)
        (d / "name").write_text("package-0\n" if name.count(":") == 1 else "core\n")
    return tmp_path


def test_rapl_sums_packages_across_a_wrap_around(powercap):
    meter = PowerMeter("cpu", powercap_root=powercap, sample_hz=100)
    meter.begin()
    time.sleep(0.03)
    write_atomically(powercap / "intel-rapl:0" / "energy_uj", 500_000)  # wrapped: +1.5 J
    write_atomically(powercap / "intel-rapl:1" / "energy_uj", 7_000_000)  # +2 J
    time.sleep(0.03)
    write_atomically(powercap / "intel-rapl:0" / "energy_uj", 2_000_000)  # +1.5 J
    write_atomically(powercap / "intel-rapl:0:0" / "energy_uj", 99_000_000)  # a subdomain: ignored
    time.sleep(0.03)
    m = meter.end()
    assert m.energy_j == pytest.approx(5.0)
    assert m.avg_power_w == pytest.approx(5.0 / m.duration_s)
    assert m.scope == power.SCOPE_PACKAGE and m.power_source == power.POWER_RAPL and m.reason is None
    assert m.samples and all(s[1] >= 0 and s[2:] == (None, None) for s in m.samples)  # no wrap spike


@pytest.mark.parametrize("layout", ["no powercap", "no packages", "energy_uj unreadable"])
def test_rapl_unreadable_means_none_with_reason(tmp_path, layout):
    root = tmp_path / "powercap"
    if layout != "no powercap":
        root.mkdir()
        (root / "intel-rapl-mmio:0").mkdir()  # not a package domain
    if layout == "energy_uj unreadable":
        (root / "intel-rapl:0").mkdir()
        (root / "intel-rapl:0" / "max_energy_range_uj").write_text("1000\n")
        (root / "intel-rapl:0" / "energy_uj").mkdir()  # reading it fails, even as root
    m = measure(PowerMeter("cpu", powercap_root=root), 0.01)
    assert (m.energy_j, m.avg_power_w, m.samples, m.power_source) == (None, None, [], None)
    assert m.reason.startswith(f"no RAPL counters readable under {root} (")
    assert m.scope == power.SCOPE_PACKAGE


# --- the API -------------------------------------------------------------------------------

def test_measurement_is_plain_json(nvml):
    m = measure(PowerMeter("cuda:0", uuid="GPU-aaaa"), 0.06)
    d = json.loads(json.dumps(m.to_dict()))
    assert d["samples"][0][1:] == [100.0, 87.0, 5 * 2**30]
    assert set(d) >= {"energy_j", "avg_power_w", "duration_s", "sample_hz_achieved", "power_source",
                      "scope", "reason", "overhead_s", "sampled_energy_j"}


def test_the_run_record_keeps_the_measurement_itself_read_by_attribute(nvml):
    m = measure(PowerMeter("cuda:0", uuid="GPU-aaaa"), 0.06)
    assert PowerMeasurement.from_dict(json.loads(json.dumps(m.to_dict()))) == m  # back from the store's JSON
    # engine/train.py hands the report the measurement's dict; the report and the run record hold it typed
    sent = report(power=m.to_dict(), power_device="GPU-aaaa")
    info = rank_info(sent, rank=0, engine_id=0, pid=1, host="h", device="cuda:0", device_name="H100")
    assert info.power == sent.power == m
    assert info.power.samples[0][1:] == (100.0, 87.0, 5 * 2**30) and info.power.sampled_energy_j > 0
    assert info.power.scope == power.SCOPE_GPU and info.power.reason is None


def test_the_measurement_reads_as_a_mapping_for_readers_not_yet_typed(nvml):
    # records/summary.py, records/segments.py and plots/measures.py still read power by key
    m = measure(PowerMeter("cuda:0", uuid="GPU-aaaa"), 0.06)
    assert m["energy_j"] == m.energy_j and m.get("scope") == power.SCOPE_GPU and m.get("nothing") is None
    assert {**m, "samples": []}["avg_power_w"] == m.avg_power_w and "nothing" not in m
    with pytest.raises(KeyError):
        m["to_dict"]  # methods are not keys


def test_misuse_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="between 10 and 1000"):
        PowerMeter("cpu", sample_hz=5)
    meter = PowerMeter("cpu", powercap_root=tmp_path)
    with pytest.raises(RuntimeError, match="without begin"):
        meter.end()
    meter.begin()
    with pytest.raises(RuntimeError, match="twice"):
        meter.begin()
    meter.end()

