"""Reliability, for real: a client killed mid-run loses none of its finished runs (the store's
own checks: tests/records/test_store_reliability.py), nothing listens beyond this machine or is
readable by other users, and 50 runs in a row leak no process, thread, port, file or memory.
docs/reliability.md has the measured numbers and what is known not to hold yet."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time

import psutil
import pytest
import torch
from torch import nn

from record_helpers import quietly_read

ENV = {**os.environ, "PYTHONWARNINGS": "ignore::DeprecationWarning"}
LOOPBACK = "127.0.0.1"


# -- nothing lost: a client killed in the middle of a run ---------------------------------------
CLIENT = """
import json, os, signal, sys, threading
import parakit
runs, facts, how = sys.argv[1:]
s = parakit.Session(workers=2, device="cpu", runs_dir=runs, progress=False)
first = s.run("mlp", workers=2, steps=3, batch_size=8)
going = threading.Event()
threading.Thread(target=s.run, daemon=True, kwargs=dict(
    model="mlp", workers=2, steps=10**6, batch_size=8, on_progress=lambda p: going.set())).start()
going.wait(120)
with open(facts + ".tmp", "w") as f:
    json.dump({"first": first.run_id, "status": first.status, "folder": s._engines._folder}, f)
os.replace(facts + ".tmp", facts)
os.kill(os.getpid(), getattr(signal, how))  # SIGKILL: the OOM killer, a crash; SIGTERM: kill, a job's end
"""
LINGER_S = 10.0  # how long the engines of a dead client get to go


def still_running(procs: dict[int, float]) -> list[int]:
    """The pids of ``procs`` (pid -> create time) that are still running, zombies aside."""
    alive = []
    for pid, created in procs.items():
        try:
            p = psutil.Process(pid)
            if p.create_time() == created and p.status() != psutil.STATUS_ZOMBIE:
                alive.append(pid)
        except psutil.Error:
            pass
    return alive


def end(procs: dict[int, float]) -> None:
    for pid in still_running(procs):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"])
def test_a_client_killed_mid_run_keeps_its_finished_runs(tmp_path, how):
    runs, facts, errors = tmp_path / "runs", tmp_path / "facts.json", tmp_path / "client.err"
    with open(errors, "w") as err:
        client = subprocess.Popen([sys.executable, "-c", CLIENT, str(runs), str(facts), how], env=ENV,
                                  stdout=subprocess.DEVNULL, stderr=err)
    procs: dict[int, float] = {}  # every process the client started, seen while it lived
    try:
        deadline = time.monotonic() + 240
        while client.poll() is None and time.monotonic() < deadline:
            try:
                for p in psutil.Process(client.pid).children(recursive=True):
                    procs.setdefault(p.pid, p.create_time())
            except psutil.Error:
                pass
            time.sleep(0.2)
        if client.poll() is None:
            client.kill()
            pytest.fail("the client did not get to its long run within 240 s: " + errors.read_text()[-2000:])
        assert client.wait(10) == -getattr(signal, how) and facts.exists(), errors.read_text()[-2000:]
        info = json.loads(facts.read_text())
        saved = quietly_read(runs)
        assert [(r.run_id, r.status) for r in saved] == [(info["first"], "ok")]
        assert [p.name for p in runs.iterdir()] == [f"{info['first']}.json"]  # no temp file either

        deadline = time.monotonic() + LINGER_S
        while still_running(procs) and time.monotonic() < deadline:
            time.sleep(0.5)
        left = still_running(procs)
    finally:
        end(procs)
    if left:
        shutil.rmtree(info["folder"], ignore_errors=True)
    # A regression, not an open gap (docs/reliability.md: fixed): it fails, never an xfail.
    assert not left, (f"{len(left)} of the dead client's {len(procs)} processes (controller, engines, "
                      f"nannies) still ran {LINGER_S:.0f} s after it was killed")
    assert not os.path.exists(info["folder"])


# -- nothing exposed --------------------------------------------------------------------------
STORE_PORT = """
import torch.distributed as dist
store = dist.distributed_c10d._get_default_store()  # private: torch has no public getter
while hasattr(store, "underlying_store"):
    store = store.underlying_store
print(store.port)
"""


def listening(procs) -> dict[tuple[int, str, int], str]:
    """(pid, address, port) -> process name, for every listening TCP socket of ``procs``."""
    out = {}
    for p in procs:
        for c in p.net_connections(kind="inet"):
            if c.status == psutil.CONN_LISTEN:
                out[(p.pid, c.laddr.ip, c.laddr.port)] = p.name()
    return out


def test_controller_engines_and_process_group_listen_on_loopback_only(session):
    assert session.run("mlp", workers=2, steps=3, batch_size=8).ok  # a live group: gloo and its store
    (rank0, _) = session.execute(STORE_PORT, workers=2)
    store_port = int(rank0["stdout"])
    procs = psutil.Process().children(recursive=True)
    pids = {p.pid for p in procs}
    controller = session._engines._cluster.controller.process.pid
    assert controller in pids and set(session._engines.pids()) <= pids
    sockets = listening(procs)
    ports = {port for (_, _, port) in sockets}
    assert store_port in ports and len(ports) >= 8  # the controller's, the engines', gloo's, the store
    # ipyparallel's (controller, schedulers, engines, nannies), gloo's pairs and the group's store
    # on rank 0, which TCPStore alone would bind to every interface ("::")
    assert sorted(key for key in sockets if key[1] != LOOPBACK) == []


def test_connection_files_are_for_the_owner_only(session):
    folder = session._engines._folder
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700  # nothing below it is reachable by others
    security = os.path.join(folder, "security")
    assert stat.S_IMODE(os.stat(security).st_mode) == 0o700
    keys = []
    for name in os.listdir(security):
        path = os.path.join(security, name)
        with open(path) as f:
            holds_key = bool(json.load(f).get("key"))
        if holds_key:
            keys.append(name)
            assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, name
    assert sorted(k.rsplit("-", 1)[1] for k in keys) == ["client.json", "engine.json"]


# -- 50 runs in a row ----------------------------------------------------------------------------
def refuses_on_rank_1():
    import torch.distributed as dist

    if dist.is_initialized() and dist.get_rank() == 1:
        raise RuntimeError("this model refuses rank 1, on purpose")
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))


def four_features(step, global_batch_size):
    g = torch.Generator().manual_seed(step)
    return torch.randn(global_batch_size, 4, generator=g), torch.randint(0, 2, (global_batch_size,), generator=g)


PLAN = [("single", 1), ("ddp", 2), ("fsdp", 2), ("ddp", 1), ("fsdp", 1)]  # every layout and world size
RUNS = 50
# One failure inside the warm-up and one after it: the first may leave a one-time trace (the
# aborted group's), the second must add nothing.
FAILURES = (5, 26)
# Readings after whole turns of PLAN, so the same layout ran last. Engines settle once every
# layout and world size has run a few times (their process groups formed, torch's caches
# filled): three turns for threads, files and sockets; memory from run 10 on, as promised.
SETTLED, MEMORY_FROM = 15, 10


def resources(session) -> dict:
    """What the client and the engines hold now."""
    me = psutil.Process()
    engines = [psutil.Process(pid) for pid in session._engines.pids()]
    return {
        "processes": sorted(p.pid for p in me.children(recursive=True)),
        "engine_pids": session._engines.pids(),
        "client threads": me.num_threads(),
        "client open files": me.num_fds(),
        "engine threads": [p.num_threads() for p in engines],
        "engine open files": [p.num_fds() for p in engines],
        "engine sockets": [len(p.net_connections(kind="inet")) for p in engines],
        "engine listening sockets": [sum(c.status == psutil.CONN_LISTEN for c in p.net_connections(kind="inet"))
                                     for p in engines],
        "engine memory (MiB)": [round(row.rss_bytes / 2**20) for row in session.status()],
    }


# metric -> (the reading it is compared with, the most it may hold after run 50)
ALLOWED = {
    "client threads": ("start", lambda before: before + 2),
    "client open files": ("start", lambda before: before + 4),
    "engine threads": (SETTLED, lambda before: before + 2),
    "engine open files": (SETTLED, lambda before: before + 4),
    "engine sockets": (SETTLED, lambda before: before + 2),
    "engine listening sockets": (SETTLED, lambda before: before + 1),
    "engine memory (MiB)": (MEMORY_FROM, lambda before: before * 1.10),
}


@pytest.mark.slow
def test_fifty_runs_in_a_row_leak_nothing(session):
    seen = {"start": resources(session)}
    restarts = []
    started = time.monotonic()
    for i in range(1, RUNS + 1):
        strategy, workers = PLAN[(i - 1) % len(PLAN)]
        if i in FAILURES:
            result = session.run(refuses_on_rank_1, data=four_features, strategy="ddp", workers=2, steps=3,
                                 batch_size=8)
            assert result.status == "failed" and "refuses rank 1, on purpose" in result.error
        else:
            result = session.run("mlp", strategy=strategy, workers=workers, steps=3, batch_size=8)
            assert result.ok, f"run {i} ({strategy} x{workers}): {result.error}\n{engine_logs(session)}"
        restarts += [w for w in result.warnings if "restarted" in w]
        if i in (MEMORY_FROM, SETTLED, RUNS):
            seen[i] = resources(session)
    took = time.monotonic() - started
    first, last = seen["start"], seen[RUNS]
    print(soak_table(seen, took))
    if not restarts:  # a restart is reported in the run's warnings, and replaces the engines
        assert last["engine_pids"] == first["engine_pids"]
        assert last["processes"] == first["processes"]  # no extra python child, none gone
    assert len(last["processes"]) == len(first["processes"])
    grown = []
    for metric, (since, limit) in ALLOWED.items():
        before, after = seen[since][metric], last[metric]
        for b, a in zip(*(v if isinstance(v, list) else [v] for v in (before, after)), strict=True):
            if a > limit(b):
                grown.append(f"{metric} {b} -> {a}")
    # Without a gc.collect() after each run, FSDP's reference cycles kept models, optimizer state
    # and old process groups (threads, sockets, files) until the cyclic GC happened to run.
    assert grown == []


def engine_logs(session, tail: int = 3000) -> str:
    """The end of each engine's log: what an engine said before it died."""
    folder = os.path.join(session._engines._folder, "log")
    texts = []
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        with open(os.path.join(folder, name), errors="replace") as f:
            texts.append(f"--- {name}\n{f.read()[-tail:]}")
    return "\n".join(texts)


def soak_table(seen: dict, took: float) -> str:
    when = ("start", MEMORY_FROM, SETTLED, RUNS)
    rows = ["| metric | before run 1 | after run 10 | after run 15 | after run 50 | allowed after run 50 |",
            "|---|---|---|---|---|---|"]
    for metric, (since, limit) in ALLOWED.items():
        before = seen[since][metric]
        allowed = [round(limit(b)) for b in before] if isinstance(before, list) else round(limit(before))
        rows.append(f"| {metric} | " + " | ".join(str(seen[k][metric]) for k in when) + f" | {allowed} |")
    rows.append("| python processes under the client | "
                + " | ".join(str(len(seen[k]["processes"])) for k in when) + " | the same |")
    return "\n".join(rows) + f"\n{RUNS} runs in {took:.1f} s"
