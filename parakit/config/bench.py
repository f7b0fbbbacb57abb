"""The communication benchmark's vocabulary and its settings' checks: which collectives, which
message sizes and dtypes. Standard library only, so a benchmark's settings are checked in the
notebook's process without importing torch (engine/commbench.py measures)."""

from __future__ import annotations

import re
from typing import Any

# The collectives engine/commbench.py times, in the order it times them.
COLLECTIVES = ("all_reduce", "all_gather", "reduce_scatter", "broadcast", "send_recv")
# 1 KB .. 256 MB in powers of 4: ten sizes, a decade of bandwidth behaviour every ~1.7 steps.
DEFAULT_SIZES_BYTES = [1024 * 4**k for k in range(10)]
DTYPE_NAMES = ("float32", "float16", "bfloat16")
CPU_MAX_BYTES = 64 * 2**20  # default cap on CPU engines: 256 MB x 2 buffers x ranks is a lot of RAM
_UNITS = {"": 1, "B": 1, "K": 2**10, "KB": 2**10, "KIB": 2**10, "M": 2**20, "MB": 2**20, "MIB": 2**20,
          "G": 2**30, "GB": 2**30, "GIB": 2**30}


def parse_size(value: int | str, what: str = "a message size") -> int:
    """Bytes from 4096, "4096", "64KB", "16 MB" or "1GiB" (binary multiples, as nccl-tests)."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value > 0:
            return value
    elif isinstance(value, str):
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", value)
        if m and m.group(2).upper() in _UNITS and float(m.group(1)) > 0:
            return int(float(m.group(1)) * _UNITS[m.group(2).upper()])
    raise ValueError(f"{what} must be a positive number of bytes, e.g. 4096, '64KB' or '16MB' (got {value!r})")


def bench_settings(world: Any, sizes, collectives, repeats: Any, warmup: Any, max_size, dtype: str,
                   gpus: list) -> dict[str, Any]:
    """Check the settings and return the engine function's keyword arguments.

    Raises:
        ValueError: naming the setting and what it takes.
    """
    if isinstance(world, bool) or not isinstance(world, int) or world < 2:
        raise ValueError(f"the communication benchmark needs workers >= 2 (got {world!r})")
    names = list(COLLECTIVES) if collectives is None else _as_list(collectives, "collectives")
    if not names:
        raise ValueError(f"collectives is empty; use any of: {', '.join(COLLECTIVES)}")
    unknown = [c for c in names if c not in COLLECTIVES]
    if unknown:
        raise ValueError(f"unknown collective {unknown[0]!r}; use any of: {', '.join(COLLECTIVES)}")
    for what, value, low in (("repeats", repeats, 1), ("warmup", warmup, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{what} must be an integer >= {low} (got {value!r})")
    if dtype not in DTYPE_NAMES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPE_NAMES)} (got {dtype!r})")
    chosen = DEFAULT_SIZES_BYTES if sizes is None else [parse_size(v) for v in _as_list(sizes, "sizes")]
    if not chosen:
        raise ValueError("sizes is empty; give message sizes such as ['1KB', '1MB'] (or leave it out)")
    cap = parse_size(max_size) if max_size is not None else (None if gpus else CPU_MAX_BYTES)
    kept = sorted({b for b in chosen if cap is None or b <= cap})
    if not kept:
        raise ValueError(f"no message size is at most max_size={max_size!r}")
    return {"sizes_bytes": kept, "collectives": names, "repeats": repeats, "warmup": warmup, "dtype": dtype}


def _as_list(value: Any, name: str) -> list:
    """One value or a list/tuple of them; anything else is refused in one line."""
    if isinstance(value, (str, int)) and not isinstance(value, bool):
        return [value]
    if isinstance(value, (list, tuple)):
        return list(value)
    example = {"sizes": "['1KB', '1MB']", "collectives": "['all_reduce', 'send_recv']"}[name]
    raise ValueError(f"{name} must be a list, e.g. {name}={example} (got {value!r})")
