"""What a Session does beside training: the communication benchmark, code on every rank (the
``%%parakit`` cell), the engines' status, and the advisor on these engines. A mixin of Session, which owns the engines, the
one-at-a-time lock and the recovery after a failure that these use."""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from parakit.cluster.launch import Outcome, run_code, run_on_ranks
from parakit.records.engine_facts import EngineStatus
from parakit.records.commbench import CommBenchResult, bench_result
from parakit.records.result import now_iso
from parakit.records.store import read_comm_benches, save_comm_bench
from parakit.session.preflight import check_bench, check_count
from parakit.session.progress import ProgressPrinter


class SessionTools:
    """Session's benchmark, cell execution and status (see session.py for the rest)."""

    def bench_comm(
        self,
        workers: int | None = None,
        *,
        sizes: list[int | str] | None = None,
        collectives: list[str] | None = None,
        repeats: int = 10,
        warmup: int = 3,
        max_size: int | str | None = None,
        dtype: str = "float32",
        on_progress: Callable[[dict[str, Any]], None] | None = None,
    ) -> CommBenchResult:
        """Time collectives over message sizes on the engines: nccl-tests' algorithm and bus
        bandwidth, and a latency + bandwidth fit per collective. Saved in the run store.

        Example:
            >>> b = s.bench_comm(workers=2, sizes=["1KB", "1MB", "16MB"], collectives=["all_reduce", "send_recv"])
            >>> b.frame()[["collective", "bytes", "time_s", "busbw_gbps"]]

        Args:
            workers: ranks taking part, at least 2 (default: every engine).
            sizes: message sizes in bytes, or text such as "64KB", "16MB" (default 1 KB .. 256 MB
                in powers of 4, up to ``max_size``).
            collectives: any of all_reduce, all_gather, reduce_scatter, broadcast, send_recv
                (default: all).
            repeats: timed calls per size; the time is their median on the slowest rank.
            warmup: untimed calls per size before them.
            max_size: leave out larger sizes (default: 64 MB on CPU engines, none on GPUs).
            dtype: float32, float16 or bfloat16.
            on_progress: called a few times a second with rank 0's progress (collective,
                bytes, done, total) instead of the printed line.

        Returns:
            A CommBenchResult (also saved under ``runs_dir/comm-bench``); a failed or stopped
            benchmark is returned and saved too, with its error.

        Raises:
            ValueError: If a setting is wrong (no engine is touched then).
        """
        kwargs = check_bench(self.preflight(), workers, sizes=sizes, collectives=collectives, repeats=repeats,
                             warmup=warmup, max_size=max_size, dtype=dtype)
        world = kwargs.pop("workers")
        from parakit.engine.commbench import bench_on_engine  # the code the engines run

        started = now_iso()
        printer = ProgressPrinter(f"comm bench x{world}") if self.progress and on_progress is None else None
        with self._one_at_a_time():
            self._engines.grow(world)
            backend, warning = self._engines.ensure_group(world)
            self._warn_once(warning)
            outcome = run_on_ranks(self._engines, world, bench_on_engine, (kwargs,),
                                   on_progress or printer, self._stop, self.hang_timeout_s)
        self._after(outcome)
        devices = [e.device_name for e in self._engines.ranks(world)]
        result = bench_result(_as_stored(outcome), world, backend, devices, started)
        if printer:
            printer.done(f"{result.bench_id}: {result.status}" + (f" ({result.error.splitlines()[0]})" if result.error else ""))
        save_comm_bench(result, self.runs_dir)
        return result

    def comm_benches(self) -> list[CommBenchResult]:
        """Every communication benchmark in the run store, oldest first."""
        return read_comm_benches(self.runs_dir)

    def execute(self, code: str, workers: int | None = None, names: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Run Python code on the first ``workers`` engines (default: all), each in its own
        namespace, with the process group formed and ``rank``, ``world_size`` and ``device``
        defined there. Names the code defines stay on the engines for the next call.

        Example:
            >>> out = s.execute("import torch.distributed as dist; print(rank, dist.get_world_size())")
            >>> [r["stdout"] for r in out]
            ['0 2\n', '1 2\n']

        Args:
            code: the code, as in a notebook cell.
            workers: how many engines take part (ranks 0..workers-1); more are started if needed.
            names: objects defined on every rank before the code runs, e.g. ``{"model": Tiny}``
                (sent as a run's own model is, so a class defined in a notebook travels).

        Returns:
            One dict per rank: rank, engine_id, stdout, stderr, result (the text of the last
            expression's value, or None) and error (the rank's exception, or None). When a rank
            fails while others wait for it, the others are interrupted after a few seconds.
        """
        world = check_count(self.preflight(), self.workers if workers is None else workers)
        with self._one_at_a_time():
            self._engines.grow(world)
            _, warning = self._engines.ensure_group(world)
            self._warn_once(warning)
            outcome = run_code(self._engines, code, world, names)
        self._after(outcome)
        return outcome.rank_results

    def advise(self, model: Any = "mlp", **settings: Any):
        """Rank every configuration of ``model`` on these engines by predicted step time (or
        cost), calibrated here: ``parakit.advise(model, session=self, ...)``.

        Example:
            >>> advice = s.advise("gpt", workers=2, verify=True)

        Args:
            model: "mlp", "cnn", "gpt" or a zero-argument callable returning an nn.Module.
            **settings: ``parakit.advise``'s other arguments (``workers``, ``hardware``,
                ``verify``, ``top``, ``prices``, ...); not the engine arguments, which are this
                session's.

        Returns:
            An Advice, saved in this session's run store.

        Raises:
            ValueError: If a setting is wrong, or an engine argument is given (before any run).
        """
        # The advisor is built on the session, so this forward is the one import up a layer:
        # made here, when advice is asked for (tests/test_layers.py lists it).
        from parakit.advisor.advice import advise

        return advise(model, session=self, **settings)

    def status(self) -> list[EngineStatus]:
        """One EngineStatus per engine, in rank order: engine id, host, local rank, pid, alive,
        device, device name, threads, whether it is in the process group and its backend, and
        the memory of its process (resident and peak resident bytes, read from /proc; None with
        the reason where that cannot be read). Asks no engine anything, so it answers during a
        run too.

        Example:
            >>> [(e.rank, e.device, e.alive) for e in s.status()]
            [(0, 'cpu', True), (1, 'cpu', True)]
        """
        ids, backend = self._engines.group or ((), None)
        rows = []
        for rank, e in enumerate(self._engines.ranks(self._engines.size)):
            if e.hostname == socket.gethostname():
                rss, peak, why = _process_memory(e.pid)
            else:  # a pid means nothing on another host
                rss, peak, why = None, None, f"the engine runs on {e.host}, whose /proc is not readable from here"
            rows.append(EngineStatus(
                rank=rank, engine_id=e.engine_id, host=e.host, local_rank=e.local_index, pid=e.pid,
                alive=not self._engines.dead_ids([e.engine_id]), device=e.device, device_name=e.device_name,
                threads=e.threads, in_group=e.engine_id in ids, backend=backend if e.engine_id in ids else None,
                rss_bytes=rss, peak_rss_bytes=peak, memory_reason=why, gpu_index=e.gpu_index,
            ))
        return rows


def _as_stored(outcome: Outcome) -> Outcome:
    """The outcome as records.commbench.bench_result reads it: each rank's CommBenchFigures as
    the JSON the store keeps. The figures come back typed; they turn to JSON only here, where
    they become the stored record."""
    return replace(outcome, rank_results=[None if f is None else f.to_dict() for f in outcome.rank_results])


def _process_memory(pid: int) -> tuple[int | None, int | None, str | None]:
    """(resident, peak resident) bytes of a local process from /proc, and None; or None, None
    and the reason they cannot be read."""
    found = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    found[line[:5]] = int(line.split()[1]) * 1024
    except (OSError, ValueError) as e:
        return None, None, f"cannot read /proc/{pid}/status ({type(e).__name__}: {e})"
    rss, peak = found.get("VmRSS"), found.get("VmHWM")
    missing = None if rss is not None and peak is not None else f"/proc/{pid}/status has no VmRSS or VmHWM line"
    return rss, peak, missing
