"""A CPU's energy through Intel RAPL under /sys/class/powercap: a package counter covers the
whole socket, so every process on it is counted, not only this engine (SCOPE_PACKAGE)."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

from parakit.engine.power_record import POWER_RAPL, SCOPE_PACKAGE, Unmeasurable, describe

_RAPL_PACKAGE = re.compile(r"intel-rapl:\d+")  # intel-rapl:0, not its subdomains intel-rapl:0:0


def _rapl_packages(root: Path) -> list[tuple[Path, int]]:
    """(energy_uj path, max_energy_range_uj) of every package domain, or Unmeasurable."""
    def unreadable(why: str) -> Unmeasurable:
        return Unmeasurable(f"no RAPL counters readable under {root} ({why})")

    try:
        dirs = sorted(p for p in root.iterdir() if _RAPL_PACKAGE.fullmatch(p.name))
    except OSError as e:
        raise unreadable(describe(e)) from None
    if not dirs:
        raise unreadable("no intel-rapl:N package domains there")
    packages = []
    for d in dirs:
        try:
            max_range_uj = int((d / "max_energy_range_uj").read_text())
            int((d / "energy_uj").read_text())
        except PermissionError as e:
            raise unreadable(f"{d.name}: {describe(e)}; energy_uj is root-only on kernels "
                             "patched for PLATYPUS (2020)") from None
        except (OSError, ValueError) as e:
            raise unreadable(f"{d.name}: {describe(e)}") from None
        packages.append((d / "energy_uj", max_range_uj))
    return packages


class RaplPackages:
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
