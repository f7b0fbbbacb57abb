"""The run store: a folder with one JSON file per run.

Files are written atomically (a temp file in the same folder, then ``os.replace``), so a
crash mid-write never leaves a half file under a run's name. JSON only, never pickle: a run
file from someone else cannot run code when it is loaded.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from parakit.records import CommBenchResult, RunResult

if TYPE_CHECKING:
    import pandas

DEFAULT_RUNS_DIR = "parakit-runs"


COMM_BENCH_DIR = "comm-bench"  # communication benchmarks, in a subfolder of the run store


def save_run(result: RunResult, runs_dir: str | os.PathLike = DEFAULT_RUNS_DIR) -> Path:
    """Write ``result`` to ``runs_dir/<run_id>.json`` atomically and return the path."""
    return _write(Path(runs_dir), result.run_id, result.to_dict())


def save_comm_bench(result: CommBenchResult, runs_dir: str | os.PathLike = DEFAULT_RUNS_DIR) -> Path:
    """Write a communication benchmark to ``runs_dir/comm-bench/<bench_id>.json`` atomically."""
    return _write(Path(runs_dir) / COMM_BENCH_DIR, result.bench_id, result.to_dict())


def read_comm_benches(runs_dir: str | os.PathLike = DEFAULT_RUNS_DIR) -> list[CommBenchResult]:
    """All communication benchmarks in the run store, oldest first; damaged files are skipped."""
    benches = []
    for path in sorted((Path(runs_dir) / COMM_BENCH_DIR).glob("*.json")):
        try:
            benches.append(CommBenchResult.from_dict(json.loads(path.read_text())))
        except (OSError, ValueError, TypeError, KeyError) as e:
            warnings.warn(f"parakit: skipped damaged benchmark file {path}: {e}", stacklevel=2)
    benches.sort(key=lambda b: b.started_at)
    return benches


def _write(folder: Path, name: str, data: dict) -> Path:
    """Write-then-rename, so a reader (or a crash) never sees half a file."""
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"{name}.json"
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1, allow_nan=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return final


def read_runs(runs_dir: str | os.PathLike = DEFAULT_RUNS_DIR) -> list[RunResult]:
    """All runs in the folder, oldest first; a damaged file is skipped with a warning naming it."""
    runs = []
    for path in sorted(Path(runs_dir).glob("*.json")):
        try:
            runs.append(RunResult.from_dict(json.loads(path.read_text())))
        except (OSError, ValueError, TypeError, KeyError) as e:
            warnings.warn(f"parakit: skipped damaged run file {path}: {e}", stacklevel=2)
    runs.sort(key=lambda r: r.started_at)
    return runs


def runs_frame(runs: list[RunResult]) -> "pandas.DataFrame":
    """One row per run: id, status, the config's fields and the summary's figures."""
    import pandas as pd  # imported here: the store is also read where pandas is not needed

    from parakit.scaling import add_scaling  # pandas too

    rows = []
    for r in runs:
        row = {
            "run_id": r.run_id,
            "status": r.status,
            "started_at": r.started_at,
            "world_size": r.world_size,
            "backend": r.backend,
            "device": r.device[0] if r.device else None,
        }
        row.update(r.config)
        # As text, so a column of them compares and groups (two sizes of a model never mix).
        row["model_options"] = ", ".join(f"{k}={v}" for k, v in sorted((r.config.get("model_options") or {}).items()))
        row.update({k: v for k, v in r.summary.items() if k != "method"})
        row["error"] = r.error
        rows.append(row)
    return add_scaling(pd.DataFrame(rows))


def load_runs(runs_dir: str | os.PathLike = DEFAULT_RUNS_DIR) -> "pandas.DataFrame":
    """The run store as a pandas DataFrame, one row per run.

    Args:
        runs_dir: the run folder (default ``./parakit-runs``).

    Returns:
        A DataFrame with ``run_id``, ``status``, the run's config and its summary figures.
    """
    return runs_frame(read_runs(runs_dir))
