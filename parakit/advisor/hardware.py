"""What the advisor predicts for: a hardware description, from a preset, a dict of figures, or
the current engines (filled in by ``advisor.py`` from measurements).

Standard library only, so a bad preset name or figure is found before any engine is touched.
Figures are per rank (one GPU, or one engine's share of a CPU host). Links follow nccl-tests'
bus-bandwidth convention: a collective of S bytes on n ranks takes
``alpha * ceil(log2 n) + S * bus_factor(n) / bus bandwidth`` (see advisor/comm.py, collective_time).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from parakit.config.formulas import TERA, peak_tflops_by_precision
from parakit.config.choices import is_number

GIB = 2**30
# The share of a preset GPU's dense peak that a model's matmuls reach when compute time is
# estimated from FLOPs (calibrated on another kind of device): large transformer layers reach
# 40-60 % MFU on H100/A100 (PaLM, Megatron-LM reports); small ones much less, which the
# per-pass fixed cost measured on the calibration device stands for.
PRESET_MFU = 0.5


def _check_positive(name: str, value: Any, zero_ok: bool = False) -> None:
    if not (is_number(value, low=0) if zero_ok else is_number(value, above=0)):
        raise ValueError(f"hardware {name} must be a {'non-negative' if zero_ok else 'positive'} number (got {value!r})")


class Unpredictable(Exception):
    """The cost model has no figure for a configuration; the message says why."""


@dataclass(frozen=True, kw_only=True)
class Link:
    """One kind of connection between ranks: latency and bus bandwidth."""

    alpha_s: float
    """Latency of one collective step, in seconds."""
    bandwidth_bytes_per_s: float
    """Bus bandwidth (nccl-tests' busbw): bytes per second each rank's link carries."""

    def __post_init__(self) -> None:
        _check_positive("alpha_s", self.alpha_s, zero_ok=True)
        _check_positive("bandwidth_bytes_per_s", self.bandwidth_bytes_per_s)


@dataclass(frozen=True, kw_only=True)
class Hardware:
    """The machine a prediction is for."""

    name: str
    """A preset's name, 'current engines', or 'custom'."""
    device: str = "gpu"
    """gpu or cpu: decides which precisions exist and how communication overlaps compute."""
    peak_tflops: Mapping[str, float] = field(default_factory=dict)
    """Dense peak TFLOP/s per precision (fp32, tf32, fp16, bf16, bf16-pure); {} where unknown."""
    memory_bytes: float = 80 * GIB
    """Memory each rank may use."""
    link: Link | None
    """Between ranks of one node (NVLink, PCIe, a host's loopback); None where none was
    measured (a single engine)."""
    network: Link | None = None
    """Between nodes; None when every rank is on one node."""
    ranks_per_node: int = 8
    """Ranks that share a node's link; collectives over more ranks run at the network's speed."""
    collectives: Mapping[str, Link] = field(default_factory=dict)
    """Measured links per collective (all_reduce, all_gather, ...), used instead of ``link``."""
    measured_world: int = 2
    """Ranks the measured collectives ran on: their latency is scaled from there."""
    threads_per_rank: int | None = None
    """CPU: threads each rank computes with; compute scales inversely with it."""
    cores: int | None = None
    """CPU: cores of a node; more ranks than cores share them."""
    memory_bandwidth_bytes_per_s: float = 2e12
    """Device memory bandwidth: the optimizer's update is bound by it."""
    calibrated: bool = False
    """True for the current engines: compute comes from their runs as measured, not scaled."""
    device_name: str = ""
    """A GPU's name as torch reports it ('NVIDIA H100 80GB HBM3'): what its hour is priced by
    (config/prices.py). CPU hours are priced per core."""

    def __post_init__(self) -> None:
        if self.device not in ("gpu", "cpu"):
            raise ValueError(f"hardware device must be gpu or cpu (got {self.device!r})")
        for precision, tflops in self.peak_tflops.items():
            _check_positive(f"peak_tflops[{precision!r}]", tflops)
        if not self.memory_bytes > 0:  # infinite where unknown: then nothing is refused for memory
            raise ValueError(f"hardware memory_bytes must be a positive number (got {self.memory_bytes!r})")
        if isinstance(self.ranks_per_node, bool) or not isinstance(self.ranks_per_node, int) or self.ranks_per_node < 1:
            raise ValueError(f"ranks_per_node must be an integer >= 1 (got {self.ranks_per_node!r})")

    def link_for(self, collective: str, ranks: int) -> Link:
        """The link a collective over ``ranks`` runs at: the slowest one it crosses."""
        if self.network is not None and ranks > self.ranks_per_node:
            return self.network
        link = self.collectives.get(collective, self.link)
        if link is None:
            raise Unpredictable("no link between ranks was measured (one engine); start 2 engines, "
                                "or predict for a preset such as 'h100-nvlink'")
        return link

    def peak_flops(self, precision: str) -> float | None:
        tflops = self.peak_tflops.get(precision)
        return tflops * TERA if tflops else None


def _gpu(name, device_name, memory_gib, bandwidth, link, network=None, ranks_per_node=8) -> Hardware:
    return Hardware(name=name, device="gpu", peak_tflops=peak_tflops_by_precision(device_name),
                    memory_bytes=memory_gib * GIB, memory_bandwidth_bytes_per_s=bandwidth, link=link,
                    network=network, ranks_per_node=ranks_per_node, device_name=device_name)


# Dense peaks from config/formulas.py's table (NVIDIA datasheets); link figures are the bus
# bandwidths nccl-tests all_reduce reaches on such machines, and typical NCCL latencies.
_H100 = "NVIDIA H100 80GB HBM3"
_A100 = "NVIDIA A100-SXM4-80GB"
_NVLINK4 = Link(alpha_s=15e-6, bandwidth_bytes_per_s=360e9)  # 8x H100 SXM, NVSwitch: ~360-480 GB/s busbw
_NDR_IB = Link(alpha_s=25e-6, bandwidth_bytes_per_s=45e9)  # 400 Gb/s InfiniBand per GPU: ~45 GB/s busbw
_PCIE4 = Link(alpha_s=20e-6, bandwidth_bytes_per_s=20e9)  # PCIe 4.0 x16 through the host: ~20 GB/s busbw
_HDR_IB = Link(alpha_s=25e-6, bandwidth_bytes_per_s=11e9)  # 100 Gb/s per node: ~11 GB/s busbw
_10GBE = Link(alpha_s=60e-6, bandwidth_bytes_per_s=1.1e9)  # 10 Gb/s Ethernet, gloo over TCP

PRESETS: dict[str, Hardware] = {
    # One NVLink/NVSwitch domain: every rank talks at NVLink speed (a DGX H100; larger counts as in
    # an NVLink-switched pod).
    "h100-nvlink": _gpu("h100-nvlink", _H100, 80, 3.35e12, _NVLINK4, ranks_per_node=1024),
    # DGX H100 nodes: 8 GPUs on NVLink inside a node, nodes over 400 Gb/s InfiniBand per GPU.
    "h100-ib": _gpu("h100-ib", _H100, 80, 3.35e12, _NVLINK4, network=_NDR_IB),
    # A100 80GB PCIe cards, 8 per server without NVLink, servers over 100 Gb/s.
    "a100-pcie": _gpu("a100-pcie", _A100, 80, 1.94e12, _PCIE4, network=_HDR_IB),
    # One 32-core CPU server per rank (fp32 ~2 TFLOP/s with AVX-512 FMA), 10 Gb/s Ethernet.
    "cpu-ethernet": Hardware(name="cpu-ethernet", device="cpu", memory_bytes=128 * GIB,
                             memory_bandwidth_bytes_per_s=200e9,
                             peak_tflops={"fp32": 2.0, "bf16": 2.0, "bf16-pure": 2.0},
                             link=_10GBE, ranks_per_node=1, threads_per_rank=32, cores=32),
}

# The figures a dict may give, with what they mean, for the error message.
HARDWARE_KEYS = {
    "peak_tflops": "dense peak TFLOP/s: a number (every precision) or {precision: number}",
    "memory_gib": "memory per rank in GiB",
    "alpha_s": "link latency in seconds",
    "beta_bytes_per_s": "link bus bandwidth in bytes/s",
    "ranks_per_node": "ranks on the fast link",
    "network_alpha_s": "latency between nodes in seconds",
    "network_beta_bytes_per_s": "bus bandwidth between nodes in bytes/s",
    "device": "gpu or cpu",
    "name": "a label; a GPU's hour is priced by it ('H100'), as by the name torch reports",
}
_REQUIRED = ("peak_tflops", "memory_gib", "alpha_s", "beta_bytes_per_s")


def hardware_from(spec: Any) -> Hardware:
    """A Hardware from a preset name, a dict of figures, or a Hardware.

    Args:
        spec: ``"h100-nvlink"``, ``"h100-ib"``, ``"a100-pcie"``, ``"cpu-ethernet"``; or a dict
            with peak_tflops, memory_gib, alpha_s, beta_bytes_per_s (and optionally
            ranks_per_node, network_alpha_s, network_beta_bytes_per_s, device, name).

    Raises:
        ValueError: naming the preset or figure that is wrong, and what is allowed.
    """
    if isinstance(spec, Hardware):
        return spec
    if isinstance(spec, str):
        key = spec.strip().lower()
        if key not in PRESETS:
            raise ValueError(f"unknown hardware preset {spec!r}; use one of {', '.join(PRESETS)}, "
                             "'engines' (the current engines) or a dict of figures")
        return PRESETS[key]
    if not isinstance(spec, Mapping):
        raise ValueError(f"hardware must be a preset name or a dict of figures (got {type(spec).__name__})")
    return _from_dict(spec)


def _from_dict(spec: Mapping[str, Any]) -> Hardware:
    unknown = sorted(set(spec) - set(HARDWARE_KEYS))
    if unknown:
        raise ValueError(f"hardware has no figure {unknown[0]!r}; figures: {', '.join(HARDWARE_KEYS)}")
    missing = [k for k in _REQUIRED if k not in spec]
    if missing:
        raise ValueError(f"hardware needs {', '.join(missing)} ({HARDWARE_KEYS[missing[0]]}), "
                         "or use a preset such as 'h100-nvlink'")
    peaks = spec["peak_tflops"]
    if not isinstance(peaks, Mapping):
        _check_positive("peak_tflops", peaks)
        peaks = dict.fromkeys(("fp32", "tf32", "fp16", "bf16", "bf16-pure"), float(peaks))
    network = None
    if "network_alpha_s" in spec or "network_beta_bytes_per_s" in spec:
        network = Link(alpha_s=_number(spec, "network_alpha_s"),
                       bandwidth_bytes_per_s=_number(spec, "network_beta_bytes_per_s"))
    _check_positive("memory_gib", spec["memory_gib"])
    return Hardware(
        name=str(spec.get("name", "custom")), device=str(spec.get("device", "gpu")).lower(),
        peak_tflops=dict(peaks), memory_bytes=float(spec["memory_gib"]) * GIB,
        link=Link(alpha_s=_number(spec, "alpha_s"), bandwidth_bytes_per_s=_number(spec, "beta_bytes_per_s")),
        network=network, ranks_per_node=spec.get("ranks_per_node", 1024 if network is None else 8),
        device_name=str(spec.get("name", "")),
    )


def _number(spec: Mapping[str, Any], key: str) -> float:
    if key not in spec:
        raise ValueError("hardware gives one of network_alpha_s and network_beta_bytes_per_s; give both")
    _check_positive(key, spec[key], zero_ok=key.endswith("alpha_s"))
    return float(spec[key])

