"""A session grows its engines on demand and closing leaves no process or file behind."""

import os
import subprocess
import sys
import time

import parakit


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0); it holds no resources, but say what it is
    try:
        with open(f"/proc/{pid}/status") as f:
            return "zombie" not in f.read()
    except OSError:
        return False


def test_grow_on_demand_then_close_leaves_nothing(tmp_path):
    session = parakit.Session(workers=1, device="cpu", runs_dir=tmp_path, progress=False)
    folder = session._engines._folder
    first = session._engines.pids()
    assert os.path.isdir(folder)
    result = session.run("mlp", workers=2, steps=3, batch_size=8)
    assert result.ok, result.error
    pids = session._engines.pids()
    assert len(pids) == 2 and pids[0] == first[0]  # grown, not restarted
    controller = session._engines._cluster.controller.process.pid
    session.close()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(alive(p) for p in pids + [controller]):
        time.sleep(0.2)
    assert [p for p in pids + [controller] if alive(p)] == []
    assert not os.path.exists(folder)
    session.close()  # closing twice is harmless


def test_context_manager_closes(tmp_path):
    with parakit.Session(workers=1, device="cpu", runs_dir=tmp_path, progress=False) as s:
        pids = s._engines.pids()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.2)
    assert not any(alive(p) for p in pids)


def test_the_notebook_reaches_a_session_and_a_run_launch_without_torch():
    """torch is 2 s of a cold start on 2 cores: the notebook's side of starting engines and
    launching a run (which ships engine.preload.train, a name the engines resolve) imports
    none; the engines import it, ahead of the first run."""
    code = "import sys, parakit\nparakit.Session\nfrom parakit.cluster import launch\nprint('torch' in sys.modules)\n"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "False"
