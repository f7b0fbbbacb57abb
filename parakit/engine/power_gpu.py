"""A GPU's power and energy through NVML (pynvml): the driver's millijoule energy counter, and
instant power, utilisation and memory for the sampler. NVML is opened through the process's one
owner of it (gpus.NVML)."""

from __future__ import annotations

from parakit.engine import gpus
from parakit.engine.gpus import NvmlUnavailable, normalise_gpu_uuid
from parakit.engine.power_record import POWER_INSTANT, POWER_USAGE, SCOPE_GPU, Unmeasurable, describe

_VALUE_FIELDS = {0: "dVal", 1: "uiVal", 2: "ulVal", 3: "ullVal", 4: "sllVal", 5: "siVal", 6: "usVal"}
"""nvmlValueType_t -> the member of the nvmlValue_t union that holds the value."""


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
    raise Unmeasurable(f"no NVML device has UUID {uuid} (NVML sees {', '.join(seen) or 'none'})")


class NvmlGpu:
    """One GPU's counters through NVML. Each read is about a microsecond on an H100."""

    scope = SCOPE_GPU

    def __init__(self, uuid: str | None):
        if uuid is None:
            raise Unmeasurable("this engine is not pinned to a GPU (no GPU UUID to find in NVML)")
        try:
            self.nvml = gpus.NVML.keep_open()  # read at call time: tests give each case its own
        except NvmlUnavailable as e:
            raise Unmeasurable(str(e)) from None
        try:
            self.handle = _handle_for_uuid(self.nvml, uuid)
        except self.nvml.NVMLError as e:
            raise Unmeasurable(f"cannot list GPUs through NVML ({describe(e)})") from None
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
            raise Unmeasurable("this GPU has no energy counter "
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
