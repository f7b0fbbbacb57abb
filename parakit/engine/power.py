"""Power and energy of this engine's device over a window, measured inside the engine as it trains.

GPU, through NVML (power_gpu.py): energy is the driver's millijoule counter read at begin and at
end, not an integral of samples, since the counter sees every transient a 20 Hz sampler misses.
CPU, through Intel RAPL (power_cpu.py): a package counter covers the whole socket, so every
process on it is counted, not only this engine; ``scope`` says so. Here: the meter's windows and
the daemon thread that samples power, utilisation and memory at ``sample_hz`` for the curve;
what a window reports is power_record.PowerMeasurement.

A figure that cannot be measured is None with a reason; nothing here raises into training.

    meter = PowerMeter(device, sample_hz=20)
    meter.begin()
    ...  # train
    measurement = meter.end()
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

# per_joule lives with the other formulas the advisor shares; kept importable from here.
from parakit.config.formulas import per_joule
from parakit.engine.gpus import normalise_gpu_uuid
from parakit.engine.power_cpu import RaplPackages
from parakit.engine.power_gpu import NvmlGpu
from parakit.engine.power_record import (POWER_INSTANT, POWER_RAPL, POWER_USAGE, SAMPLE_HZ_RANGE, SCOPE_GPU,
                                         SCOPE_PACKAGE, PowerMeasurement, Sample, Unmeasurable, achieved_hz,
                                         describe, trapezoid_j)

__all__ = ["POWER_INSTANT", "POWER_RAPL", "POWER_USAGE", "SAMPLE_HZ_RANGE", "SCOPE_GPU", "SCOPE_PACKAGE",
           "PowerMeasurement", "PowerMeter", "Sample", "normalise_gpu_uuid", "per_joule"]


def _open_source(device_type: str, uuid: str | None, powercap_root: Path):
    """(source, None) or (None, why there is none)."""
    try:
        if device_type == "cuda":
            return NvmlGpu(uuid), None
        if device_type == "cpu":
            return RaplPackages(powercap_root), None
        return None, f"no power meter for device type {device_type!r} (cuda and cpu have one)"
    except Unmeasurable as e:
        return None, str(e)
    except Exception as e:  # noqa: BLE001 - a meter must never stop a training run
        return None, f"power meter setup failed ({describe(e)})"


def _scope_for(device_type: str) -> str:
    return {"cuda": SCOPE_GPU, "cpu": SCOPE_PACKAGE}.get(device_type, f"{device_type} (no meter)")


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
            sample_hz_achieved=achieved_hz(samples),
            power_source=self._source.power_source if self._source is not None else None,
            scope=self.scope,
            reason="; ".join(w.reasons) or None,
            overhead_s=w.overhead_s,
            sampled_energy_j=trapezoid_j(samples),
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
        except Unmeasurable as e:
            w.reasons.append(str(e))
        except Exception as e:  # noqa: BLE001 - a meter must never stop a training run
            w.reasons.append(f"energy counter unreadable at {when} ({describe(e)})")
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
            w.reasons.append(f"sampling stopped at {t:.2f} s ({describe(e)})")
        finally:
            w.overhead_s = time.thread_time() - cpu0
