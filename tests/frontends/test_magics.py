"""The %parakit magics, driven through a real IPython shell with 2 CPU engines: bad input is
one line naming the fix and touches no engine; runs, sweeps, plots, the store and the cell
magic do what they say."""

import contextlib
import io
import os
import socket
import time

import pandas as pd
import plotly.graph_objects as go
import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

from parakit.frontends import magics, magics_runs
from parakit.plots.runs import PLOTS
from parakit.session.session import Session
from parakit.records.store import read_runs

SMALL = "--model mlp --steps 3 --batch-size 8"


@pytest.fixture(scope="module")
def shell():
    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "parakit")
    return ip


@pytest.fixture(scope="module")
def started(shell, tmp_path_factory):
    """The module's engines, started by a bare ``%parakit`` (defaults) in a fresh folder, so
    the default run store lands there. Yields (magics, what starting printed)."""
    folder = tmp_path_factory.mktemp("notebook")
    before = os.getcwd()
    os.chdir(folder)
    m = shell.magics_manager.registry["ParakitMagics"]
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            status = shell.run_line_magic("parakit", "")
        yield m, printed.getvalue(), status
    finally:
        if m.session is not None:
            m.session.close()
            m.session = None
        os.chdir(before)


def parakit(shell, line):
    return shell.run_line_magic("parakit", line)


# -- bad input -------------------------------------------------------------------------------
@pytest.mark.parametrize("line, says", [
    ("nosuch", "use one of: start, status, stop, restart, run, sweep, panel, plot, runs, bench"),
    ("run --steps x", "invalid int value: 'x' (see: %parakit run -h)"),
    ("run --strategy tensor --model cnn", "tensor parallelism has no plan for cnn; use gpt or mlp"),
    ("run --cpu --precision fp16", "fp16 with loss scaling needs a GPU; on CPU use bf16 or fp32"),
    ("run --cpu --workers 1000", "use workers <="),
    ("run --carbon-intensity lots", "argument --carbon-intensity: expected a number >= 0"),
    ("sweep --cpu --workers 1,2 --strategy single,ddp",
     "1 of 4 combinations do not fit, e.g. single x2 mlp: strategy single runs on 1 worker"),
    ("sweep --workers 1,x", "expected a comma-separated list of int"),
    ("start -n 0", "-n must be >= 1"),
    ("start --cpu --gpus 0", "drop one of them"),
    ("plot nosuch", "available: " + ", ".join(PLOTS)),
    ("plot loss --last 2 --runs a", "not allowed with argument --last"),
    ("bench comm --workers 1", "the communication benchmark needs workers >= 2 (got 1)"),
    ("bench comm --sizes 1KB,lots", "a message size must be a positive number of bytes"),
    ("bench disk", "invalid choice: 'disk'"),
    ("fit --vary height", "vary must be one of depth, width, batch_size (got 'height')"),
    ("fit --strategies fsdp:zero=1", "zero=1 applies to ddp, not fsdp"),
    ("run --switch 3:lr=1", "lr cannot be switched during a run"),
    ("run --resume 20990101-000000-abcdef", "has no saved state"),
    ("switch", "say what to switch, e.g. %parakit switch --precision bf16"),
    ("switch --precision bf16", "no run is going to switch"),
])
def test_bad_input_is_one_line_with_the_fix_and_starts_nothing(shell, tmp_path, line, says):
    fresh = magics.ParakitMagics(shell)  # no engines yet: a mistake must not start them
    fresh._runs_dir = tmp_path
    with pytest.raises(UsageError) as caught:
        fresh.parakit(line)
    message = str(caught.value)
    assert says in message
    assert "\n" not in message
    assert fresh.session is None
    assert list(tmp_path.iterdir()) == []


def test_cell_options_are_checked_before_engines_start(shell):
    fresh = magics.ParakitMagics(shell)
    with pytest.raises(UsageError, match="-n must be >= 1"):
        fresh.parakit("-n 0", "print(rank)")
    assert fresh.session is None


# -- engines ---------------------------------------------------------------------------------
def test_bare_parakit_starts_default_engines_and_says_so(started):
    m, printed, status = started
    assert "no engines yet: starting them with the defaults" in printed
    assert m.session.workers == 2 and not m.session.gpus  # the default on a machine without GPUs
    assert list(status["rank"]) == [0, 1]
    assert list(status["device"]) == ["cpu", "cpu"]
    assert status["alive"].all()
    assert (status["rss_mib"] > 10).all()  # an engine with torch imported holds more than that
    for pid in status["pid"]:
        os.kill(int(pid), 0)  # the process exists


def test_the_session_describes_its_engines_by_attribute(started):
    m, _, _ = started
    engines, rows = m.session.engines, m.session.status()
    assert [e.pid for e in engines] == [r.pid for r in rows] == m.session._engines.pids()
    assert [(e.host, e.local_index, e.device, e.gpu) for e in engines] == [
        (socket.gethostname(), 0, "cpu", None), (socket.gethostname(), 1, "cpu", None)]
    assert [(r.rank, r.local_rank, r.alive, r.device) for r in rows] == [(0, 0, True, "cpu"), (1, 1, True, "cpu")]
    for r in rows:  # local engines: their memory is read from /proc, so no reason is given
        assert r.peak_rss_bytes >= r.rss_bytes > 10 * 2**20 and r.memory_reason is None


def test_start_again_and_engine_changes_point_to_restart(started, shell, capsys):
    m, _, _ = started
    pids = m.session._engines.pids()
    parakit(shell, "start")
    assert "engines already running: 2 engine(s) on CPU" in capsys.readouterr().out
    with pytest.raises(UsageError, match=r"to change them: %parakit restart -n 3$"):
        parakit(shell, "start -n 3")
    with pytest.raises(UsageError, match="drop one of them"):
        parakit(shell, "restart --cpu --gpus 0")  # checked before the engines are stopped
    assert m.session._engines.pids() == pids


# -- runs ------------------------------------------------------------------------------------
def test_run_takes_the_cli_flags_and_saves_the_run(started, shell):
    m, _, _ = started
    result = parakit(shell, f"run --strategy ddp --workers 2 {SMALL} --seed 1 --lr 0.01 --price-device-hour 2.5")
    assert result.ok, result.error
    assert result.cost_usd > 0 and "at $2.5 per core-hour (given" in result.cost_method["cost_usd"]
    assert result.world_size == 2 and result.backend == "gloo"
    assert (result.config["steps"], result.config["batch_size"], result.config["seed"]) == (3, 8, 1)
    assert result.config["lr"] == 0.01
    assert len(result.steps) == 3
    assert result.run_id in {r.run_id for r in read_runs(m.session.runs_dir)}


def test_run_while_another_goes_is_refused_and_stop_ends_it(started, shell):
    import threading

    m, _, _ = started
    session = m.session
    outcome = {}
    worker = threading.Thread(target=lambda: outcome.setdefault(
        "result", session.run("mlp", workers=2, steps=10**6, batch_size=8)))
    worker.start()
    deadline = time.monotonic() + 30
    while not session.busy and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    with pytest.raises(UsageError, match="a run is going on these engines"):
        parakit(shell, f"run {SMALL}")
    step = parakit(shell, "switch --strategy fsdp")  # the run going on switches, and says where
    assert session.stop() is True
    # A run of a million steps ends only on the stop. How soon is a timing (the switch to fsdp
    # saves the state and starts the new layout first, 12 s once on a loaded CI machine): it is
    # benchmarked, not asserted here.
    worker.join(120)
    assert not worker.is_alive()
    assert outcome["result"].status == "stopped"
    assert [(g["first_step"], g["settings"]["strategy"]) for g in outcome["result"].segments] == [(0, "ddp"), (step, "fsdp")]
    assert outcome["result"].error.startswith("stopped on request")
    assert session.stop() is False  # nothing runs now


def test_sweep_checks_all_then_runs_the_product_and_shows_table_and_plots(started, shell, monkeypatch, capsys):
    m, _, _ = started
    shown = []
    monkeypatch.setattr(magics_runs, "display", shown.append)
    before = {r.run_id for r in read_runs(m.session.runs_dir)}
    returned = parakit(shell, f"sweep --workers 1,2 --strategy ddp {SMALL} --price-device-hour 2.5")
    out = capsys.readouterr().out
    new = [r for r in read_runs(m.session.runs_dir) if r.run_id not in before]
    ids = sorted(new, key=lambda r: r.world_size)
    # one line per run, when it ends (its own progress line showed it while it went)
    assert [l.split(":")[0] for l in out.splitlines() if l.startswith("[")] == [
        f"[1/2] {ids[0].run_id} ddp x1 mlp", f"[2/2] {ids[1].run_id} ddp x2 mlp"], out
    assert sorted(r.world_size for r in new) == [1, 2] and all(r.ok for r in new)
    table, speedup, loss = shown
    assert isinstance(table, pd.DataFrame)
    assert list(table["workers"]) == [1, 2] and list(table["status"]) == ["ok", "ok"]
    one, two = (next(r for r in new if r.world_size == n) for n in (1, 2))
    assert table["speedup"][0] == 1.0
    assert table["speedup"][1] == pytest.approx(two.summary["samples_per_s"] / one.summary["samples_per_s"])
    assert [t.name for t in speedup.data if t.name.startswith("ddp, mlp")] and "ideal (linear)" in {t.name for t in speedup.data}
    assert sorted(t.customdata[0][0] for t in loss.data) == sorted(r.run_id for r in new)
    assert [r.run_id for r in returned] == [r.run_id for r in new]
    assert all("at $2.5 per core-hour (given" in r.cost_method["cost_usd"] for r in new)


OWN = (
        "import torch\n"
        "from torch import nn\n"
        "class Tiny(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.fc = nn.Linear(4, 2)\n"
        "    def forward(self, x):\n"
        "        return self.fc(x)\n"
        "def batches(step, global_batch_size):\n"
        "    g = torch.Generator().manual_seed(step)\n"
        "    return torch.randn(global_batch_size, 4, generator=g), torch.randint(0, 2, (global_batch_size,), generator=g)\n"
        "def my_loss(outputs, targets):\n"
        "    return nn.functional.cross_entropy(outputs, targets)\n"
)


def test_your_own_model_data_and_loss_by_their_names_in_the_notebook(started, shell):
    shell.run_cell(OWN)
    result = parakit(shell, "run --model Tiny --data batches --loss my_loss --workers 2 --steps 3 --batch-size 8")
    assert result.ok, result.error
    assert (result.config["model"], result.config["data"], result.config["loss"]) == ("Tiny", "batches", "my_loss")
    with pytest.raises(UsageError, match=r"unknown model 'Tinyy': the built-ins are mlp, cnn, gpt; in this notebook: .*Tiny"):
        parakit(shell, "run --model Tinyy --data batches")


def test_your_own_model_in_the_panel_and_in_a_cell_by_their_names(started, shell, capsys):
    shell.run_cell(OWN)
    panel = parakit(shell, "panel --model Tiny --data batches --loss my_loss")
    try:
        assert panel.model.options[-1] == "Tiny"
        panel.model.value = "Tiny"
        settings = panel.settings()
        assert (settings["model"], settings["data"], settings["loss"]) == (
            shell.user_ns["Tiny"], shell.user_ns["batches"], shell.user_ns["my_loss"])
    finally:
        panel.close()
    for line, says in [("panel --data batches", "--data and --loss go with --model NAME"),
                       ("panel --model Tiny,Nope", "unknown model 'Nope'"),
                       ("panel --model gpt", "gpt is a built-in model")]:
        with pytest.raises(UsageError, match=says):
            parakit(shell, line)
    capsys.readouterr()
    # the cell magic defines them on every rank as model, data and loss
    shell.run_cell_magic("parakit", "--model Tiny --data batches --loss my_loss",
                         "x, y = data(0, 4)\nprint(rank, sum(p.numel() for p in model().parameters()), "
                         "tuple(x.shape), round(loss(model()(x), y).item() * 0 + 1))")
    assert capsys.readouterr().out == "[rank 0]\n0 10 (4, 4) 1\n[rank 1]\n1 10 (4, 4) 1\n"
    with pytest.raises(UsageError, match="unknown data 'nosuch'"):
        shell.run_cell_magic("parakit", "--data nosuch", "pass")


# -- the store -------------------------------------------------------------------------------
def test_runs_and_plots_read_the_store(started, shell):
    m, _, _ = started
    stored = read_runs(m.session.runs_dir)
    frame = parakit(shell, "runs")
    assert list(frame["run_id"]) == [r.run_id for r in stored]
    assert list(parakit(shell, "runs --last 1")["run_id"]) == [stored[-1].run_id]

    figure = parakit(shell, "plot loss --last 2")
    assert isinstance(figure, go.Figure)
    assert figure.html_path.exists()  # no notebook front end here: kept as an HTML file too
    assert [t.customdata[0][0] for t in figure.data] == [r.run_id for r in stored[-2:]]
    ok = [r for r in stored if r.ok]
    # The sweep's two runs: the same settings but the worker count, so one is two's baseline.
    pairs = [(o, t) for t in reversed(ok) for o in ok
             if t.world_size == 2 and o.world_size == 1 and {**o.config, "workers": 2} == t.config]
    one, two = pairs[0]
    figure = parakit(shell, f"plot speedup --runs {one.run_id},{two.run_id[-6:]}")  # the end of an id will do
    drawn = next(t for t in figure.data if t.name != "ideal (linear)")
    assert list(drawn.x) == [1, 2]
    step_times = parakit(shell, f"plot step-times --runs {two.run_id}")
    assert list(step_times.data[0].y) == pytest.approx([s.step_time_s * 1e3 for s in two.steps])
    with pytest.raises(UsageError, match="no 1-worker baseline"):
        parakit(shell, f"plot speedup --runs {two.run_id}")
    with pytest.raises(UsageError, match="no run 'nosuch' in .*; see the ids with %parakit runs"):
        parakit(shell, "plot memory --runs nosuch")
    segments = parakit(shell, "runs --segments")  # a run that never switched is one segment
    assert set(segments["run_id"]) == {r.run_id for r in stored} and len(segments) > len(stored)  # one switched
    with pytest.raises(UsageError, match="no run nosuch in"):
        parakit(shell, f"runs --delete {stored[-1].run_id} nosuch")
    assert len(read_runs(m.session.runs_dir)) == len(stored)  # every id is checked before any goes


def test_plots_in_terminal_ipython_are_html_files_not_a_browser(started, capsys):
    """IPython without a notebook front end (a terminal): plotly's renderer there opens a
    browser, or raised "could not locate runnable browser". The figure is written as a
    self-contained HTML file and shown as its path, by the real ipython command."""
    import subprocess
    import sys

    m, _, _ = started
    assert read_runs(m.session.runs_dir)  # the store in this folder, where the magic looks by default
    env = {k: v for k, v in os.environ.items() if k != "BROWSER"}
    typed = "%load_ext parakit\n%parakit plot loss --last 1\nexit\n"  # as typed at the prompt
    done = subprocess.run([sys.executable, "-m", "IPython", "--simple-prompt", "--no-banner", "--colors=NoColor"],
                          input=typed, cwd=os.getcwd(), capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0 and "Traceback" not in done.stdout + done.stderr, done.stdout + done.stderr
    assert "[parakit] figure written to " in done.stdout and "browser" not in done.stderr
    path = os.path.join(os.getcwd(), done.stdout.split("figure written to ")[1].split(" (open it")[0])
    with open(path) as f:
        html = f.read()
    assert "plotly" in html and len(html) > 1_000_000  # plotly.js inside: opens offline


def test_trace_prints_where_the_traces_are_and_how_to_open_them(started, shell, capsys):
    with pytest.raises(UsageError, match="no run with traces yet; make one with %parakit run --trace"):
        parakit(shell, "trace")
    r = parakit(shell, f"run {SMALL} --strategy ddp --workers 2 --trace")
    assert r.ok, r.error
    capsys.readouterr()
    paths = parakit(shell, "trace")
    assert paths == r.traces and len(paths) == 2 and all(os.path.exists(p) for p in paths)
    out = capsys.readouterr().out
    assert r.traces[0] in out and "ui.perfetto.dev" in out and "chrome://tracing" in out


def test_bench_comm_prints_the_table_and_returns_the_figure(started, shell, capsys):
    figure = parakit(shell, "bench comm --sizes 1KB,64KB --collectives all_reduce,broadcast --repeats 2")
    out = capsys.readouterr().out
    assert "all_reduce" in out and "busbw GB/s" in out and "fit all_reduce:" in out
    assert isinstance(figure, go.Figure) and len(figure.data) == 2
    assert list(figure.data[0].x) == [1024, 65536]


# -- the cell magic --------------------------------------------------------------------------
ALL_REDUCE = """
import torch, torch.distributed as dist
t = torch.ones(1, device=device) * (rank + 1)
dist.all_reduce(t)
print(rank, world_size, device, t.item())
t.item()
"""


def test_cell_runs_on_every_rank_with_the_group_ready(started, shell, capsys):
    shell.run_cell_magic("parakit", "", ALL_REDUCE)
    assert capsys.readouterr().out == (
        "[rank 0]\n0 2 cpu 3.0\nOut[rank 0]: 3.0\n"
        "[rank 1]\n1 2 cpu 3.0\nOut[rank 1]: 3.0\n"
    )
    shell.run_cell_magic("parakit", "", "print(rank, t.item())")  # names stay on the engines
    assert capsys.readouterr().out == "[rank 0]\n0 3.0\n[rank 1]\n1 3.0\n"
    shell.run_cell_magic("parakit", "-n 1", ALL_REDUCE)
    assert capsys.readouterr().out == "[rank 0]\n0 1 cpu 1.0\nOut[rank 0]: 1.0\n"


def test_a_failing_rank_is_shown_under_its_rank_and_engines_stay_usable(started, shell, capsys):
    m, _, _ = started
    pids = m.session._engines.pids()
    cell = ("import torch, torch.distributed as dist\nprint('before', rank)\n"
            "if rank == 1:\n    raise ValueError('boom')\ndist.all_reduce(torch.ones(1))\n")
    began = time.monotonic()
    with pytest.raises(magics.RankErrors) as caught:
        shell.run_cell_magic("parakit", "", cell)
    # rank 0, left waiting in the all-reduce, fails at once rather than at the group's timeout
    assert time.monotonic() - began < 5
    assert capsys.readouterr().out == "[rank 0]\nbefore 0\n[rank 1]\nbefore 1\n"
    rendered = "\n".join(caught.value._render_traceback_())
    assert "[rank 1] ValueError: boom" in rendered
    shell.run_cell_magic("parakit", "", "print(dist.get_world_size())")
    assert capsys.readouterr().out == "[rank 0]\n2\n[rank 1]\n2\n"
    assert m.session._engines.pids() == pids


# -- last: stopping ------------------------------------------------------------------------
def test_stop_closes_panels_and_engines_and_the_store_stays_readable(started, shell, capsys):
    m, _, _ = started
    panel = parakit(shell, "panel")
    assert panel.session is m.session
    pids = m.session._engines.pids()
    parakit(shell, "stop")
    assert "stopped 2 engine(s); closed 1 panel(s)" in capsys.readouterr().out
    assert m.session is None
    assert panel.widget.comm is None  # closed
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.2)
    assert not any(_alive(p) for p in pids)
    assert parakit(shell, "status") is None
    assert "no engines are running; start them with %parakit start" in capsys.readouterr().out
    assert len(parakit(shell, "plot loss --last 1").data) == 1  # plots need no engines


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/status") as f:
        return "zombie" not in f.read()


def test_unload_ext_stops_the_engines_and_removes_the_magic(shell, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    m = shell.magics_manager.registry["ParakitMagics"]
    m.session = session = Session(workers=1, device="cpu", runs_dir=tmp_path, progress=False)
    pids = session._engines.pids()
    shell.run_line_magic("unload_ext", "parakit")
    assert "parakit" not in shell.magics_manager.magics["line"]
    assert "ParakitMagics" not in shell.magics_manager.registry
    assert m.session is None and session._engines.pids() == []
    assert not any(_alive(p) for p in pids)
    shell.run_line_magic("load_ext", "parakit")  # and back, for anything after this test
    assert "parakit" in shell.magics_manager.magics["line"]
