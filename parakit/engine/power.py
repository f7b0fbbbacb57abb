"""Power and energy of this engine's device over a window, measured inside the engine as it trains.

GPU, through NVML (pynvml): energy is the driver's millijoule counter read at begin and at end,
not an integral of samples, since the counter sees every transient a 20 Hz sampler misses. A
daemon thread samples power, utilisation and memory at ``sample_hz`` for the curve.
CPU, through Intel RAPL under /sys/class/powercap: a package counter covers the whole socket,
so every process on it is counted, not only this engine; ``scope`` says so.

A figure that cannot be measured is None with a reason; nothing here raises into training.

    meter = PowerMeter(device, sample_hz=20)
    meter.begin()
    ...  # train
    measurement = meter.end()
"""

from __future__ import annotations

import itertools
import re
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

# per_joule lives with the other formulas the advisor shares; kept importable from here.
from parakit.config.formulas import per_joule

__all__ = ["POWER_INSTANT", "POWER_RAPL", "POWER_USAGE", "SAMPLE_HZ_RANGE", "SCOPE_GPU", "SCOPE_PACKAGE",
           "PowerMeasurement", "PowerMeter", "Sample", "normalise_gpu_uuid", "per_joule"]

SCOPE_GPU = "gpu (this engine's GPU)"
SCOPE_PACKAGE = "package (whole CPU socket, shared by every process on it)"
POWER_INSTANT = "nvml_power_instant"
"""Power from the NVML field NVML_FI_DEV_POWER_INSTANT: the current draw."""
POWER_USAGE = "nvml_power_usage"
"""Power from nvmlDeviceGetPowerUsage: a 1-second average on Ampere and newer GPUs."""
POWER_RAPL = "rapl_energy_uj"
"""Power from the change of the RAPL package energy counters between two samples."""
SAMPLE_HZ_RANGE = (10.0, 1000.0)

Sample = tuple[float, float, float | None, int | None]
"""(t_s since begin, watts, GPU utilisation percent or None, memory used bytes or None)."""


@dataclass(frozen=True, kw_only=True)
class PowerMeasurement:
    """What a PowerMeter saw between begin() and end()."""

    energy_j: float | None
    """From the device's energy counter (end minus begin); None when it has none, see reason."""
    avg_power_w: float | None
    """energy_j / duration_s; None when energy_j is None."""
    duration_s: float
    """Wall time from begin() to end()."""
    samples: list[Sample] = field(default_factory=list)
    """(t_s since begin, watts, util_percent or None, mem_bytes or None), in time order."""
    sample_hz_achieved: float | None = None
    """Samples per second between the first and the last sample; None with fewer than two."""
    power_source: str | None = None
    """Where sample watts come from: POWER_INSTANT, POWER_USAGE or POWER_RAPL; None if no samples."""
    scope: str
    """What is measured: SCOPE_GPU, or SCOPE_PACKAGE (shared by every process on the socket)."""
    reason: str | None = None
    """Why a figure is None, or sampling stopped early; None when everything was measured."""
    overhead_s: float = 0.0
    """CPU time the sampler thread spent (time.thread_time in the thread)."""
    sampled_energy_j: float | None = None
    """Trapezoid integral of the samples: a cross-check, not the energy (that is energy_j)."""

    def to_dict(self) -> dict:
        """Plain JSON-able data: samples become lists."""
        d = asdict(self)
        d["samples"] = [list(s) for s in self.samples]
        return d


def normalise_gpu_uuid(uuid: str | bytes) -> str:
    """One spelling for a GPU UUID: NVML says 'GPU-3f2a...' (str or bytes), torch's
    ``get_device_properties(i).uuid`` prints '3f2a...' with no prefix."""
    text = uuid.decode() if isinstance(uuid, bytes) else str(uuid)
    return text.strip().lower().removeprefix("gpu-")


class _Unavailable(Exception):
    """A figure cannot be measured here; the message is the reason shown to the user."""


def _describe(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"


# --- GPU: NVML ---------------------------------------------------------------------------

_nvml_lock = threading.Lock()
_nvml_initialised = False

_VALUE_FIELDS = {0: "dVal", 1: "uiVal", 2: "ulVal", 3: "ullVal", 4: "sllVal", 5: "siVal", 6: "usVal"}
"""nvmlValueType_t -> the member of the nvmlValue_t union that holds the value."""


def _nvml():
    """pynvml, initialised once per process. Never shut down: NVML counts nvmlInit calls, and
    another meter (or placement's own init/shutdown pair) may be using it."""
    global _nvml_initialised
    try:
        import pynvml
    except ImportError as e:
        raise _Unavailable(f"pynvml is not installed (pip install nvidia-ml-py): {e}") from None
    with _nvml_lock:
        if not _nvml_initialised:
            try:
                pynvml.nvmlInit()
            except pynvml.NVMLError as e:
                raise _Unavailable(f"NVML is not available ({e})") from None
            _nvml_initialised = True
    return pynvml


def _handle_for_uuid(pynvml, uuid: str):
    """The NVML handle of the GPU with this UUID. NVML indices ignore CUDA_VISIBLE_DEVICES, so
    the engine's cuda:0 may be any of them: only the UUID names the device for sure."""
    wanted = normalise_gpu_uuid(uuid)
    seen = []
    for i in range(pynvml.nvmlDeviceGetCount()):
        handle = pynvml.nvmlDeviceGetHandleByIndex(i)
        found = normalise_gpu_uuid(pynvml.nvmlDeviceGetUUID(handle))
        if found == wanted:
            return handle
        seen.append(f"{i}: GPU-{found}")
    raise _Unavailable(f"no NVML device has UUID {uuid} (NVML sees {', '.join(seen) or 'none'})")


class _NvmlGpu:
    """One GPU's counters through NVML. Each read is about a microsecond on an H100."""

    scope = SCOPE_GPU

    def __init__(self, uuid: str | None):
        if uuid is None:
            raise _Unavailable("this engine is not pinned to a GPU (no GPU UUID to find in NVML)")
        self.nvml = _nvml()
        try:
            self.handle = _handle_for_uuid(self.nvml, uuid)
        except self.nvml.NVMLError as e:
            raise _Unavailable(f"cannot list GPUs through NVML ({_describe(e)})") from None
        self.unsupported: set[str] = set()  # optional readings the GPU said it does not have
        self.power_source, self.no_power_reason = self._choose_power_source()

    def start_samples(self) -> None:
        """Each sample is an instant reading: nothing to reset between windows."""

    def _instant_mw(self) -> float:
        value = self.nvml.nvmlDeviceGetFieldValues(self.handle, [self.nvml.NVML_FI_DEV_POWER_INSTANT])[0]
        if value.nvmlReturn != self.nvml.NVML_SUCCESS:  # each field carries its own status
            raise self.nvml.NVMLError(value.nvmlReturn)
        return getattr(value.value, _VALUE_FIELDS.get(value.valueType, "uiVal"))

    def _choose_power_source(self) -> tuple[str | None, str | None]:
        try:
            self._instant_mw()
            return POWER_INSTANT, None
        except self.nvml.NVMLError as e:
            instant_error = e
        try:
            self.nvml.nvmlDeviceGetPowerUsage(self.handle)
            return POWER_USAGE, None
        except self.nvml.NVMLError as e:
            return None, (f"no power samples (instant power field: {instant_error}; "
                          f"nvmlDeviceGetPowerUsage: {e})")

    def energy_counter_j(self) -> float:
        try:
            return self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle) / 1e3
        except self.nvml.NVMLError_NotSupported:
            raise _Unavailable("this GPU has no energy counter "
                               "(nvmlDeviceGetTotalEnergyConsumption: Not Supported)") from None

    def read(self) -> tuple[float, float | None, int | None]:
        """(watts, utilisation percent, memory used bytes). An NVMLError here ends sampling."""
        if self.power_source == POWER_INSTANT:
            milliwatts = self._instant_mw()
        else:
            milliwatts = self.nvml.nvmlDeviceGetPowerUsage(self.handle)
        util = self._optional("util", lambda: float(self.nvml.nvmlDeviceGetUtilizationRates(self.handle).gpu))
        mem = self._optional("mem", lambda: int(self.nvml.nvmlDeviceGetMemoryInfo(self.handle).used))
        return milliwatts / 1e3, util, mem

    def _optional(self, name: str, read):
        """A reading some GPUs lack: None from the first Not Supported on, without asking again."""
        if name in self.unsupported:
            return None
        try:
            return read()
        except self.nvml.NVMLError_NotSupported:
            self.unsupported.add(name)
            return None


# --- CPU: RAPL ---------------------------------------------------------------------------

_RAPL_PACKAGE = re.compile(r"intel-rapl:\d+")  # intel-rapl:0, not its subdomains intel-rapl:0:0


def _rapl_packages(root: Path) -> list[tuple[Path, int]]:
    """(energy_uj path, max_energy_range_uj) of every package domain, or _Unavailable."""
    def unreadable(why: str) -> _Unavailable:
        return _Unavailable(f"no RAPL counters readable under {root} ({why})")

    try:
        dirs = sorted(p for p in root.iterdir() if _RAPL_PACKAGE.fullmatch(p.name))
    except OSError as e:
        raise unreadable(_describe(e)) from None
    if not dirs:
        raise unreadable("no intel-rapl:N package domains there")
    packages = []
    for d in dirs:
        try:
            max_range_uj = int((d / "max_energy_range_uj").read_text())
            int((d / "energy_uj").read_text())
        except PermissionError as e:
            raise unreadable(f"{d.name}: {_describe(e)}; energy_uj is root-only on kernels "
                             "patched for PLATYPUS (2020)") from None
        except (OSError, ValueError) as e:
            raise unreadable(f"{d.name}: {_describe(e)}") from None
        packages.append((d / "energy_uj", max_range_uj))
    return packages


class _Rapl:
    """RAPL package counters summed over sockets, unwrapped into one running total.

    Every read (begin, each sample, end) adds the change since the previous one, corrected for
    wrap-around at max_energy_range_uj. With the sampler running, reads are 1 / sample_hz apart, so a
    window may span many wraps (each takes minutes) and still be counted right.
    """

    scope = SCOPE_PACKAGE
    power_source = POWER_RAPL
    no_power_reason = None

    def __init__(self, root: Path):
        self.packages = _rapl_packages(root)
        self._lock = threading.Lock()  # the sampler and end() may both read
        self._last_uj = self._read_uj()
        self._total_uj = 0
        self._last_sample: tuple[float, float] | None = None

    def _read_uj(self) -> list[int]:
        return [int(path.read_text()) for path, _ in self.packages]

    def energy_counter_j(self) -> float:
        with self._lock:
            now = self._read_uj()
            for (_, max_range_uj), before, after in zip(self.packages, self._last_uj, now):
                self._total_uj += after - before if after >= before else after + max_range_uj - before
            self._last_uj = now
            return self._total_uj / 1e6

    def start_samples(self) -> None:
        """A window's first sample only sets the baseline for its power."""
        self._last_sample = None

    def read(self) -> tuple[float, None, None] | None:
        """(watts since the previous sample, None, None); None for a window's first sample."""
        t, energy_j = time.perf_counter(), self.energy_counter_j()
        last, self._last_sample = self._last_sample, (t, energy_j)
        if last is None or t <= last[0]:
            return None
        return (energy_j - last[1]) / (t - last[0]), None, None


# --- the meter ---------------------------------------------------------------------------

def _open_source(device_type: str, uuid: str | None, powercap_root: Path):
    """(source, None) or (None, why there is none)."""
    try:
        if device_type == "cuda":
            return _NvmlGpu(uuid), None
        if device_type == "cpu":
            return _Rapl(powercap_root), None
        return None, f"no power meter for device type {device_type!r} (cuda and cpu have one)"
    except _Unavailable as e:
        return None, str(e)
    except Exception as e:  # noqa: BLE001 - a meter must never stop a training run
        return None, f"power meter setup failed ({_describe(e)})"


def _scope_for(device_type: str) -> str:
    return {"cuda": SCOPE_GPU, "cpu": SCOPE_PACKAGE}.get(device_type, f"{device_type} (no meter)")


def _achieved_hz(samples: list[Sample]) -> float | None:
    if len(samples) < 2 or samples[-1][0] <= samples[0][0]:
        return None
    return (len(samples) - 1) / (samples[-1][0] - samples[0][0])


def _trapezoid_j(samples: list[Sample]) -> float | None:
    if len(samples) < 2:
        return None
    return sum((b[0] - a[0]) * (a[1] + b[1]) / 2 for a, b in itertools.pairwise(samples))


@dataclass
class _Window:
    """One begin() ... end(): the sampler thread gets its own, so a hung sampler from an earlier
    window can never write into a later one."""

    t0: float = 0.0
    energy0_j: float | None = None
    samples: list[Sample] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    overhead_s: float = 0.0
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None


class PowerMeter:
    """Energy and power of this engine's device over begin() ... end() windows.

    Args:
        device: the torch device the engine trains on (torch.device or 'cuda:0' / 'cpu').
        sample_hz: samples per second of the sampler thread, 10 to 1000 (default 20).
        uuid: the GPU to read, matched by UUID in NVML ('GPU-...' or torch's spelling without
            the prefix). None: the GPU this engine was pinned to (engine.state.STATE.gpu_uuid).
        powercap_root: where the RAPL counters live, for a CPU device.
    """

    def __init__(self, device, *, sample_hz: float = 20.0, uuid: str | None = None,
                 powercap_root: str | Path = "/sys/class/powercap"):
        low, high = SAMPLE_HZ_RANGE
        if not low <= sample_hz <= high:
            raise ValueError(f"sample_hz must be between {low:g} and {high:g}, got {sample_hz!r}")
        if uuid is None:
            from parakit.engine.state import STATE

            uuid = STATE.gpu_uuid
        self.sample_hz = float(sample_hz)
        self.device_type = getattr(device, "type", None) or str(device).split(":")[0]
        self.scope = _scope_for(self.device_type)
        self._source, self._no_source_reason = _open_source(self.device_type, uuid, Path(powercap_root))
        self._window: _Window | None = None

    def begin(self) -> None:
        """Start a window: read the energy counter and start the sampler thread."""
        if self._window is not None:
            raise RuntimeError("PowerMeter.begin() called twice without end()")
        source = self._source
        w = self._window = _Window(reasons=[r for r in (self._no_source_reason, self._no_power_reason()) if r])
        w.energy0_j = self._read_counter("begin", w)
        w.t0 = time.perf_counter()
        if source is not None and source.power_source is not None:
            source.start_samples()
            w.thread = threading.Thread(target=self._sample, args=(w,), name="parakit-power-sampler", daemon=True)
            w.thread.start()

    def end(self) -> PowerMeasurement:
        """End the window: stop the sampler, read the counter again. Never raises for hardware."""
        if self._window is None:
            raise RuntimeError("PowerMeter.end() called without begin()")
        w, self._window = self._window, None
        w.stop.set()
        if w.thread is not None:
            w.thread.join(timeout=1.0)
            if w.thread.is_alive():
                w.reasons.append("the sampler did not stop within 1 s (a hung NVML call?)")
        energy1_j = self._read_counter("end", w) if w.energy0_j is not None else None
        duration_s = time.perf_counter() - w.t0
        energy_j = None if energy1_j is None else energy1_j - w.energy0_j
        if energy_j is not None and energy_j < 0:
            w.reasons.append(f"the energy counter went backwards ({energy_j:.3f} J; driver reset?)")
            energy_j = None
        samples = list(w.samples)
        return PowerMeasurement(
            energy_j=energy_j,
            avg_power_w=energy_j / duration_s if energy_j is not None and duration_s > 0 else None,
            duration_s=duration_s,
            samples=samples,
            sample_hz_achieved=_achieved_hz(samples),
            power_source=self._source.power_source if self._source is not None else None,
            scope=self.scope,
            reason="; ".join(w.reasons) or None,
            overhead_s=w.overhead_s,
            sampled_energy_j=_trapezoid_j(samples),
        )

    def latest(self) -> Sample | None:
        """The newest sample of the open window (for live progress), or None."""
        w = self._window
        return w.samples[-1] if w is not None and w.samples else None

    def _no_power_reason(self) -> str | None:
        return self._source.no_power_reason if self._source is not None else None

    def _read_counter(self, when: str, w: _Window) -> float | None:
        if self._source is None:
            return None
        try:
            return self._source.energy_counter_j()
        except _Unavailable as e:
            w.reasons.append(str(e))
        except Exception as e:  # noqa: BLE001 - a meter must never stop a training run
            w.reasons.append(f"energy counter unreadable at {when} ({_describe(e)})")
        return None

    def _sample(self, w: _Window) -> None:
        """The sampler thread: read, then wait on the stop event until the next tick (so end()
        stops it at once). Ticks are k / sample_hz after begin; a late tick is skipped, not
        caught up in a burst."""
        cpu0 = time.thread_time()
        period = 1.0 / self.sample_hz
        tick, t = 0, 0.0
        try:
            while True:
                t = time.perf_counter() - w.t0
                reading = self._source.read()
                if reading is not None:
                    w.samples.append((t, *reading))
                elapsed = time.perf_counter() - w.t0
                tick = max(tick + 1, int(elapsed / period) + 1)
                if w.stop.wait(tick * period - elapsed):
                    break
        except Exception as e:  # noqa: BLE001 - an NVML error mid-run ends sampling, not training
            w.reasons.append(f"sampling stopped at {t:.2f} s ({_describe(e)})")
        finally:
            w.overhead_s = time.thread_time() - cpu0
