"""How busy the machine was while a run measured its steps, as hyperfine warns of a busy
machine: CPU time that processes other than the run's engines used during the measured steps
(the notebook's kernel, the controller, anything else), per host, over the host's CPU
capacity in that window. Each rank reads its host's busy CPU time and its own process's
around the measured steps (engine.timing); the ranks of one host are summed here."""

from __future__ import annotations

from typing import Any

from parakit.records.rank import RankReport

BUSY_SHARE = 0.10
"""Above this share of a host's CPU capacity used by others, the figures may move: warn. On 2
cores the kernel and controller polling a run take 1-3 %; a compile or a browser tab 10-50 %."""
BUSY_MIN_CPU_S = 0.1
"""...and only above this many CPU-seconds: the kernel counts CPU time in 10 ms ticks, so a
window of a few steps of a tiny model reads a tick or two of polling as a busy machine."""


def is_busy(summary: dict[str, Any]) -> bool:
    """Whether others took enough of the machine during the measured steps to say so."""
    share, spent = summary.get("other_cpu_share"), summary.get("other_cpu_s")
    return share is not None and share > BUSY_SHARE and spent >= BUSY_MIN_CPU_S


def machine_load(reports: list[RankReport], wall_s: float | None) -> dict[str, Any]:
    """``other_cpu_s`` (CPU seconds others used on the busiest host), ``other_cpu_share``
    (that over the host's cores x the measured window) and ``busiest_host``; None each where
    a rank could not measure it."""
    loads = [r.machine_load for r in reports]
    out: dict[str, Any] = {"other_cpu_s": None, "other_cpu_share": None, "busiest_host": None}
    if not loads or any(load is None for load in loads) or not wall_s:
        return out
    hosts: dict[str, list[dict[str, Any]]] = {}
    for load in loads:
        hosts.setdefault(load["host"], []).append(load)
    shares = {}
    for host, ranks in hosts.items():
        busy = max(r["busy_cpu_s"] for r in ranks)  # each rank read the same host counter
        own = sum(r["own_cpu_s"] for r in ranks)
        window = max(r["window_s"] for r in ranks)
        other = max(busy - own, 0.0)
        shares[host] = (other, other / (ranks[0]["cpus"] * window) if window > 0 else 0.0)
    host = max(shares, key=lambda h: shares[h][1])
    out.update(other_cpu_s=shares[host][0], other_cpu_share=shares[host][1], busiest_host=host)
    return out


def busy_warning(summary: dict[str, Any]) -> str:
    """The one line said when others used more than ``BUSY_SHARE`` of a host's CPU."""
    return (f"the machine was busy: other processes used {summary['other_cpu_share']:.0%} of "
            f"{summary['busiest_host']}'s CPU during the measured steps ({summary['other_cpu_s']:.2f} CPU-s); "
            "the figures may be slower and noisier than on a quiet machine")
