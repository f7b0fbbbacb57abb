"""The run store: a folder with one JSON file per run.

Files are written atomically (a temp file in the same folder, flushed to disk, then
``os.replace``, then the folder itself flushed), so a crash mid-write never leaves a half file
under a run's name, and two processes saving into one folder never overwrite each other.
JSON only, never pickle: a run file from someone else is data and cannot run code when it is
loaded. A file that is not a run (cut short, another format, the wrong fields or types) is
skipped with a warning that names it, so one bad file never stops the others from loading.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import shutil
import tempfile
import types
import typing
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from parakit.records.record_view import RecordView
from parakit.records.commbench import CommBenchResult
from parakit.records.result import RunResult, renamed

if TYPE_CHECKING:
    import pandas

DEFAULT_RUNS_DIR = "parakit-runs"


COMM_BENCH_DIR = "comm-bench"  # communication benchmarks, in a subfolder of the run store


def save_run(result: RunResult, runs_dir: str | os.PathLike = DEFAULT_RUNS_DIR) -> Path:
    """Write ``result`` to ``runs_dir/<run_id>.json`` atomically and return the path."""
    return _write(Path(runs_dir), result.run_id, result.to_dict())


def save_rank_files(result: RunResult, reports: list | None, runs_dir: str | os.PathLike) -> None:
    """The files a run's ranks sent back beside its record, as its settings asked: Chrome traces
    (``trace``) and CUDA memory snapshots (``memory_snapshot``; a CPU rank sends None)."""
    if not reports:
        return
    if result.config.get("trace"):
        result.traces = save_traces(result.run_id, [r and r.traces for r in reports], runs_dir)
    if result.config.get("memory_snapshot"):
        result.memory_snapshots = save_memory_snapshots(result.run_id, [r and r.memory_snapshot for r in reports],
                                                        runs_dir)


def save_traces(run_id: str, rank_traces: list[list[tuple[list[int], str]] | None],
                runs_dir: str | os.PathLike = DEFAULT_RUNS_DIR) -> list[str]:
    """Write each rank's profiler windows as Chrome-trace JSON files in
    ``runs_dir/<run_id>-traces/`` (``rank<r>-steps<first>-<last>.json``); returns their paths."""
    paths = []
    for rank, windows in enumerate(rank_traces):
        for steps, text in windows or []:
            name = f"rank{rank}-steps{steps[0]}-{steps[-1]}"
            folder = Path(runs_dir) / f"{run_id}-traces"
            paths.append(str(_write(folder, name, text)))
    return paths


def save_memory_snapshots(run_id: str, rank_snapshots: list[bytes | None],
                          runs_dir: str | os.PathLike = DEFAULT_RUNS_DIR) -> list[str]:
    """Write each rank's CUDA memory snapshot in ``runs_dir/<run_id>-memory/rank<r>.pickle``
    (pytorch.org/memory_viz opens them); returns their paths. parakit writes these pickles and
    never loads one: a run store stays data that cannot run code."""
    folder = Path(runs_dir) / f"{run_id}-memory"
    return [str(_write(folder, f"rank{rank}", data, suffix=".pickle"))
            for rank, data in enumerate(rank_snapshots) if data]


def state_folder(runs_dir: str | os.PathLike, run_id: str) -> Path:
    """Where a run's state is saved with DCP (``save_state=True``): ``runs_dir/<run_id>-state/``."""
    return Path(runs_dir) / f"{run_id}-state"


def delete_run(run_id: str, runs_dir: str | os.PathLike = DEFAULT_RUNS_DIR) -> list[str]:
    """Delete a run from the store: its record and everything saved beside it (rank traces,
    memory snapshots, its saved state). Returns what was removed.

    Raises:
        ValueError: when the store has no run of that id (nothing is removed then).
    """
    folder = Path(runs_dir)
    if not isinstance(run_id, str) or not run_id or "/" in run_id or run_id.startswith("."):
        raise ValueError(f"a run id is the name of a run's file without .json (got {run_id!r})")
    record = folder / f"{run_id}.json"
    if not record.is_file():
        raise ValueError(f"no run {run_id} in {folder}")
    removed = []
    for extra in (folder / f"{run_id}-traces", folder / f"{run_id}-memory", state_folder(folder, run_id)):
        if extra.is_dir():
            shutil.rmtree(extra)
            removed.append(str(extra))
    record.unlink()  # last: a run whose files could not all go is still listed, and can be deleted again
    return [str(record), *removed]


def save_comm_bench(result: CommBenchResult, runs_dir: str | os.PathLike = DEFAULT_RUNS_DIR) -> Path:
    """Write a communication benchmark to ``runs_dir/comm-bench/<bench_id>.json`` atomically."""
    return _write(Path(runs_dir) / COMM_BENCH_DIR, result.bench_id, result.to_dict())


def read_comm_benches(runs_dir: str | os.PathLike = DEFAULT_RUNS_DIR) -> list[CommBenchResult]:
    """All communication benchmarks in the run store, oldest first; damaged files are skipped."""
    benches = _read_all(Path(runs_dir) / COMM_BENCH_DIR, CommBenchResult, "benchmark")
    benches.sort(key=lambda b: b.started_at)
    return benches


def _write(folder: Path, name: str, data: dict | str | bytes, suffix: str = ".json") -> Path:
    """Write-then-rename, so a reader (or a crash) never sees half a file. ``data`` is a record
    to write as JSON, text that is JSON already (a trace: megabytes, not parsed again), or bytes
    written as they are (a memory snapshot)."""
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"{name}{suffix}"
    # A name of its own per writer (mkstemp), so concurrent writers never share a temp file.
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb" if isinstance(data, bytes) else "w",
                       encoding=None if isinstance(data, bytes) else "utf-8") as f:
            if isinstance(data, (str, bytes)):
                f.write(data)
            else:
                json.dump(data, f, indent=1, allow_nan=True)
            f.flush()
            os.fsync(f.fileno())  # note: waits for the disk, a few ms per run
        os.replace(tmp, final)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _sync_folder(folder)
    return final


def _sync_folder(folder: Path) -> None:
    """Flush the folder's entry list, so the rename survives a power cut too (POSIX; Windows
    cannot open a folder, and a failure here leaves the file written, only less durable)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_runs(runs_dir: str | os.PathLike = DEFAULT_RUNS_DIR) -> list[RunResult]:
    """All runs in the folder, oldest first; a damaged file is skipped with a warning naming it."""
    runs = _read_all(Path(runs_dir), RunResult, "run")
    runs.sort(key=lambda r: r.started_at)
    return runs


def _read_all(folder: Path, record: type, what: str) -> list:
    """Every ``*.json`` file of ``folder`` as a ``record``; each damaged one is a warning."""
    found = []
    for path in sorted(folder.glob("*.json")):
        try:
            found.append(_read(path, record))
        except (OSError, ValueError, TypeError, KeyError) as e:
            warnings.warn(f"parakit: skipped damaged {what} file {path}: {_one_line(e)}", stacklevel=3)
    return found


def _read(path: Path, record: type):
    if not path.is_file():  # a folder, a FIFO (reading would block) or a device named *.json
        raise ValueError("not a regular file")
    data = renamed(json.loads(path.read_text(encoding="utf-8")), record)
    _check_record(data, record)
    if record is RunResult:
        for key in _CONFIG_COUNTS:
            value = data["config"].get(key)
            if key in data["config"] and (isinstance(value, bool) or not isinstance(value, int)):
                raise ValueError(f"config field {key!r} is {_json_name(value)}, not a whole number")
    return record.from_dict(data)


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


# -- what a record file must look like ---------------------------------------------------
# Settings runs_frame computes with (speed-up groups divide by them): anything but a whole
# number there makes the file damaged, not the whole frame unreadable.
_CONFIG_COUNTS = ("workers", "batch_size")
_JSON_NAMES = {dict: "an object", list: "an array", str: "a string", int: "a number", float: "a number",
               bool: "true or false", type(None): "null"}


def _check_record(data: Any, record: type, where: str = "") -> None:
    """Raise ValueError, naming the field, unless ``data`` (parsed JSON) has the fields of the
    dataclass ``record`` with values of their JSON types; list fields of dataclasses (a run's
    steps, ranks and segments) are checked item by item. What the fields hold inside (a config's
    settings, a summary's figures) is the record's own business: a Summary keeps a figure it does
    not know, so a record from an older or newer parakit still reads."""
    if not isinstance(data, dict):
        raise ValueError(f"{where or 'the file'} is {_json_name(data)}, not an object")
    fields = _fields(record)
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(f"{where}unknown field(s) {', '.join(map(repr, unknown))} for a {record.__name__}")
    missing = [name for name, (_, _, required) in fields.items() if required and name not in data]
    if missing:
        raise ValueError(f"{where}missing field(s) {', '.join(map(repr, missing))} of a {record.__name__}")
    for name, value in data.items():
        allowed, items, _ = fields[name]
        if allowed is not None and not isinstance(value, allowed):
            wanted = " or ".join(dict.fromkeys(_JSON_NAMES.get(t, t.__name__) for t in allowed))
            raise ValueError(f"{where}field {name!r} is {_json_name(value)}, not {wanted}")
        if items is not None and isinstance(value, list):
            for i, item in enumerate(value):
                _check_record(item, items, f"{where}{name}[{i}]: ")


def _json_name(value: Any) -> str:
    return _JSON_NAMES.get(type(value), type(value).__name__)


@functools.cache
def _fields(record: type) -> dict[str, tuple[tuple[type, ...] | None, type | None, bool]]:
    """Per field of a dataclass: the types JSON may hold for it (None: anything), the dataclass
    of its items (for ``list[StepRecord]``), and whether it must be present. Read from the
    annotations, so a field added to a record is checked without a change here."""
    hints = typing.get_type_hints(record)
    out = {}
    for f in dataclasses.fields(record):
        hint = hints[f.name]
        options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
        allowed: list[type] | None = []
        items = None
        for option in options:
            if option is Any:
                allowed = None
                break
            origin = typing.get_origin(option) or option
            if isinstance(origin, type) and issubclass(origin, RecordView):
                origin = dict  # a record that reads itself from a JSON object (a run's summary)
            # A float field may hold a whole number: 1 written by hand, or a count-like figure.
            allowed += [int, float] if origin is float else [origin]
            args = typing.get_args(option)
            if origin is list and args and dataclasses.is_dataclass(args[0]):
                items = args[0]
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        out[f.name] = (tuple(allowed) if allowed is not None else None, items, required)
    return out


def runs_frame(runs: list[RunResult]) -> "pandas.DataFrame":
    """One row per run: id, status, the config's fields, the summary's figures and the costs."""
    import pandas as pd  # imported here: the store is also read where pandas is not needed

    from parakit.records.frame import add_scaling  # pandas too

    rows = []
    for r in runs:
        row = {
            "run_id": r.run_id,
            "status": r.status,
            "started_at": r.started_at,
            "world_size": r.world_size,
            "backend": r.backend,
            "device_name": r.device_names[0] if r.device_names else None,
            # The hosts the session's engines were on (one rule for the speed-up compares it).
            "hosts": len(set(r.network["hosts"])) if (r.network or {}).get("hosts") else None,
        }
        row.update(r.config)
        # As text, so a column of them compares and groups (two sizes of a model never mix).
        row["model_options"] = _options_text(r.config.get("model_options"))
        row.update({k: v for k, v in r.summary.items() if k != "method"})  # its Mapping view: stored names
        row.update(cost_usd=r.cost_usd, energy_cost_usd=r.energy_cost_usd, co2_g=r.co2_g)
        row["error"] = r.error
        rows.append(row)
    return add_scaling(pd.DataFrame(rows))


def _options_text(options: Any) -> str:
    if isinstance(options, dict):
        return ", ".join(f"{k}={v}" for k, v in sorted(options.items(), key=lambda kv: str(kv[0])))
    return "" if options is None else str(options)


def load_runs(runs_dir: str | os.PathLike = DEFAULT_RUNS_DIR, *, segments: bool = False) -> "pandas.DataFrame":
    """The run store as a pandas DataFrame, one row per run.

    Args:
        runs_dir: the run folder (default ``./parakit-runs``).
        segments: one row per segment instead (a switched run's stretches of steps with the
            same settings; a run that never switched is one): the run's id, the segment's
            index, first and last step, settings and figures (``records.segments``).

    Returns:
        A DataFrame with ``run_id``, ``status``, the run's config, its summary figures and its
        ``cost_usd``, ``energy_cost_usd`` and ``co2_g`` (None where not had: the run's
        ``unmeasured`` says why).
    """
    if segments:
        from parakit.records.segments import segment_frame  # pandas too

        return segment_frame(read_runs(runs_dir))
    return runs_frame(read_runs(runs_dir))
