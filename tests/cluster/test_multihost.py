"""Beyond one machine: the launcher settings, rank order over hosts, then real runs across
hosts made of network namespaces (root only), through mpiexec, and over a slow link."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
import warnings

import pytest

import parakit
from parakit.cluster import netns
from parakit.cluster.placement import EngineInfo, place_on_hosts, ranks_for
from parakit.config.hosts import EngineLaunch, Link

RUN = {"strategy": "ddp", "workers": 2, "steps": 4, "model": "mlp", "batch_size": 32, "seed": 3}
NO_NETNS = netns.why_not()


# -- settings --------------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "rate", "delay"), [
    ("1gbit,1ms", 1e9, 1e-3), ("200mbit", 2e8, 0.0), (" 100Mbit , 500us ", 1e8, 5e-4), ("1.5gbit,0s", 1.5e9, 0.0),
])
def test_link_text(text, rate, delay):
    link = Link.parse(text)
    assert (link.rate_bits_per_s, link.delay_s) == (pytest.approx(rate), pytest.approx(delay))


@pytest.mark.parametrize("bad", ["fast", "1gb", "0mbit", "1gbit,-1ms", "1gbit,1ms,2", "", 100, None])
def test_bad_link_is_one_line_naming_the_form(bad):
    with pytest.raises(ValueError, match=r"link .*(1gbit,1ms)") as e:
        Link.parse(bad)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"launcher": "pbs"}, "engines must be one of local, mpi, slurm, ssh, attach"),
    ({"launcher": "mpi", "link": "1gbit"}, "drop link, or use engines='local'"),
    ({"link": "1gbit", "ifname": "eth0"}, "drop ifname"),
    ({"profile": "x"}, "use engines='attach'"),
    ({"launcher": "attach", "cluster_id": ""}, "cluster_id must be a non-empty string"),
    ({"launcher": "ssh", "ifname": "eth0; rm -rf /"}, "is not a network interface name"),
])
def test_bad_launch_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        EngineLaunch(**kwargs)


def test_bad_launch_settings_touch_no_engine(tmp_path, monkeypatch):
    """Refused in Session() before the controller starts: no cluster folder is made."""
    made = []
    monkeypatch.setattr(tempfile, "mkdtemp", lambda *a, **k: made.append(1) or "/nonexistent")
    with pytest.raises(ValueError, match="drop link"):
        parakit.Session(engines="mpi", link="1gbit", runs_dir=tmp_path)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(ValueError, match="it needs root"):
        parakit.Session(link="1gbit", runs_dir=tmp_path)
    assert made == []


# -- rank order --------------------------------------------------------------------------------
def engines(*spec, netns=None):
    """(engine_id, hostname, local launcher hint) -> what network.identify reports; ``netns``:
    {engine id: (namespace, its name)} for engines outside namespace 1."""
    netns = netns or {}
    return [EngineInfo(engine_id=i, pid=100 + i, hostname=h, netns=netns.get(i, ("1", None))[0],
                       netns_name=netns.get(i, ("1", None))[1], local_hint=hint, cpu_count=2)
            for i, h, hint in spec]


def test_ranks_are_ordered_by_host_then_local_rank():
    es = place_on_hosts(engines((0, "b", 1), (1, "a", 0), (2, "b", 0), (3, "a", 1)), own_host=None)
    # hosts in order of their first engine (b registered first); locally by MPI's local rank
    assert [(e.engine_id, e.host_index, e.local_index) for e in es] == [(0, 0, 1), (1, 1, 0), (2, 0, 0), (3, 1, 1)]
    assert [es[p].engine_id for p in ranks_for(es, 4)] == [2, 0, 1, 3]
    # fewer ranks than engines: taken evenly from both hosts, still host-major
    assert [es[p].engine_id for p in ranks_for(es, 2)] == [2, 1]
    assert [es[p].engine_id for p in ranks_for(es, 3)] == [2, 0, 1]


def test_this_host_comes_first_and_namespaces_are_told_apart():
    es = place_on_hosts(engines((0, "vm", None), (1, "vm", None), netns={0: ("9", "parakit-1")}), own_host="vm|1")
    assert [(e.host, e.host_index) for e in es] == [("vm/parakit-1", 1), ("vm", 0)]
    assert [es[p].engine_id for p in ranks_for(es, 2)] == [1, 0]


def test_one_host_keeps_engine_order():
    es = place_on_hosts(engines(*((i, "vm", None) for i in range(4))), own_host="vm|1")
    assert ranks_for(es, 3) == [0, 1, 2]
    with pytest.raises(ValueError, match="5 ranks asked for, but there are 4 engines"):
        ranks_for(es, 5)


# -- cleanup after a dead client (no root: `ip` is faked) ----------------------------------------
@pytest.mark.parametrize("ip", ["runs", "is gone"])
def test_the_watchdog_removes_the_second_host_named_in_the_folder(tmp_path, monkeypatch, ip):
    from parakit.cluster import watchdog

    ran = []

    def fake_run(args, **kwargs):
        if ip == "is gone":
            raise FileNotFoundError(2, "No such file or directory", "ip")
        ran.append(args)

    monkeypatch.setattr(netns.subprocess, "run", fake_run)
    folder = tmp_path / "cluster"  # no process has it in its environment: nothing is killed
    folder.mkdir()
    (folder / "netns").write_text("parakit-123x0\n")
    watchdog.stop(str(folder))
    # The same removal TwoHosts.close makes; the veth pair goes with the namespace.
    assert ran == ([["ip", "netns", "del", "parakit-123x0"]] if ip == "runs" else [])
    assert not folder.exists()  # removed even when the namespace could not be


# -- real runs ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def local_losses(session):
    r = session.run(**RUN)
    assert r.ok, r.error
    return [s.loss for s in r.steps]


@pytest.mark.skipif(NO_NETNS is not None, reason=f"two hosts need network namespaces: {NO_NETNS}")
def test_a_run_spans_two_hosts_attached_to_a_running_cluster(tmp_path, local_losses):
    """Host B is a network namespace joined to this one by a veth pair; its engine reaches the
    controller on host A over the veth. The session attaches to that running cluster, as a
    notebook attaches to one an sbatch script started."""
    import ipyparallel as ipp

    hosts = netns.TwoHosts()
    profile = tmp_path / "profile"
    cluster = ipp.Cluster(controller_ip=hosts.address_a, profile_dir=str(profile), cluster_id="two-hosts",
                          log_level=40)
    try:
        cluster.start_controller_sync()
        cluster.start_engines_sync(n=1)
        cluster.start_engines_sync(n=1, engine_cmd=hosts.engine_command(sys.executable))
        with parakit.Session(2, engines="attach", profile=str(profile), cluster_id="two-hosts",
                             runs_dir=tmp_path / "runs", progress=False) as s:
            assert len(s.hosts) == 2 and s.hosts[1].endswith(hosts.namespace), s.hosts
            r = s.run(**RUN)
            assert r.ok, r.error
            assert [rank.host for rank in r.ranks] == s.hosts  # one rank per host
            assert r.network["engines"] == "attach" and r.network["hosts"] == s.hosts
            assert [st.loss for st in r.steps] == pytest.approx(local_losses, rel=1e-6)
        assert len(cluster.connect_client_sync().ids) == 2  # attached: its engines keep running
    finally:
        cluster.stop_cluster_sync()
        hosts.close()
    assert hosts.namespace not in os.popen("ip netns list").read()


@pytest.mark.skipif(NO_NETNS is not None, reason=f"a link needs network namespaces: {NO_NETNS}")
def test_a_slow_link_sets_the_bandwidth_and_the_communication_time(tmp_path, session):
    """200 Mbit/s between the hosts: all_reduce's bus bandwidth follows it within 20%, and a
    ddp step's communication takes at least the gradient bytes over the rate."""
    text = "200mbit,1ms" if netns.shaper() == "netem" else "200mbit"  # tbf: rate only
    link = Link.parse(text)
    with parakit.Session(workers=2, link=text, runs_dir=tmp_path, progress=False) as s:
        assert len(s.hosts) == 2
        bench = s.bench_comm(sizes=["4MB"], collectives=["all_reduce"], repeats=3, warmup=1)
        busbw = bench.frame()["busbw_gbps"].iloc[0] * 1e9
        assert busbw == pytest.approx(link.bytes_per_s, rel=0.20), (busbw, link.bytes_per_s)
        slow = s.run(**{**RUN, "steps": 6, "profile_every": 1})
    fast = session.run(**{**RUN, "steps": 6, "profile_every": 1})
    assert slow.ok and fast.ok, (slow.error, fast.error)
    assert slow.network["link"] == text and fast.network["link"] is None
    grad_bytes = slow.steps[-1].rank_uncompressed_bytes[0]
    # On 2 ranks each sends its whole gradient once per all-reduce (half in reduce-scatter,
    # half in all-gather), so the link needs grad_bytes / rate per step at the least.
    assert slow.summary["comm_time_s"] > 0.8 * grad_bytes / link.bytes_per_s
    assert slow.summary["comm_time_s"] > 3 * fast.summary["comm_time_s"]


@pytest.mark.skipif(shutil.which("mpiexec") is None, reason="needs mpiexec (apt-get install openmpi-bin)")
def test_engines_through_mpiexec_train_like_local_ones(tmp_path, monkeypatch, local_losses):
    pytest.importorskip("mpi4py", reason="ipyparallel's MPI engines need mpi4py")
    for name in ("OMPI_ALLOW_RUN_AS_ROOT", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"):
        monkeypatch.delenv(name, raising=False)  # as root (CI's container), parakit sets them itself
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        with parakit.Session(workers=2, engines="mpi", runs_dir=tmp_path, progress=False) as s:
            assert [row.local_rank for row in s.status()] == [0, 1]
            r = s.run(**RUN)
    as_root = [w for w in said if "running as root: the engines' mpiexec gets" in str(w.message)]
    assert len(as_root) == (1 if os.geteuid() == 0 else 0)
    assert r.ok, r.error
    assert r.network["engines"] == "mpi"
    assert [st.loss for st in r.steps] == pytest.approx(local_losses, rel=1e-6)


@pytest.mark.skipif(shutil.which("mpiexec") is None, reason="needs mpiexec (apt-get install openmpi-bin)")
def test_a_failing_mpiexec_is_explained_within_15_s(tmp_path):
    """mpiexec that exits at once (here: an option it does not know, from the profile) is
    reported with its exit code and its own words, not after the 120 s engine timeout."""
    profile = tmp_path / "profile_broken"
    profile.mkdir()
    (profile / "ipcluster_config.py").write_text('c.MPILauncher.mpi_args = ["--no-such-mpiexec-option"]\n')
    started = time.monotonic()
    # its code where the process could still be asked; ipyparallel may have reaped it first
    exited = r"launcher exited (with code [1-9][0-9]*|\(its exit code not reported yet\)) before they started"
    with (pytest.raises(RuntimeError, match=exited) as e,
          warnings.catch_warnings()):
        warnings.filterwarnings("ignore", message="parakit: running as root")  # said, and tested above
        parakit.Session(workers=2, engines="mpi", profile=str(profile), runs_dir=tmp_path, progress=False)
    assert time.monotonic() - started < 15
    assert "no-such-mpiexec-option" in str(e.value)  # mpiexec's own message, quoted


@pytest.mark.skipif(shutil.which("mpiexec") is None, reason="needs mpiexec (apt-get install openmpi-bin)")
def test_advise_verifies_on_the_engines_it_is_told_to_start(tmp_path, monkeypatch):
    """advise(engines=...) starts its engines as Session would: the verifying run says where it ran."""
    pytest.importorskip("mpi4py", reason="ipyparallel's MPI engines need mpi4py")
    from parakit.advisor.inputs import Calibration

    if os.geteuid() == 0:
        monkeypatch.setenv("OMPI_ALLOW_RUN_AS_ROOT", "1")
        monkeypatch.setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    link = {"alpha_s": 1e-4, "beta_bytes_per_s": 1e9}
    saved = Calibration(device="cpu", device_name="test cpu", engine_count=2, threads_per_rank=1, batch_size=32,
                        pass_fixed_s=0.0, per_row_s=1e-4, step_fixed_s=0.0, single_step_s={"fp32": 0.004},
                        collectives={"all_reduce": link, "all_gather": link, "send_recv": link},
                        memory_bytes=2**33, model="mlp")
    with pytest.raises(ValueError, match="engines must be one of local, mpi"):
        parakit.advise("mlp", workers=2, calibration=saved, verify=True, engines="pbs", runs_dir=tmp_path)
    advice = parakit.advise("mlp", workers=2, calibration=saved, verify=True, top=1, strategies=["ddp"],
                            precisions=["fp32"], compressions=["none"], engines="mpi", runs_dir=tmp_path,
                            progress=False, batch_size=32, steps=4, seed=3)
    (verified,) = advice.verified
    assert verified["status"] == "ok" and verified["measured_step_time_s"] > 0
    from parakit.records.store import read_runs

    (run,) = [r for r in read_runs(tmp_path) if r.run_id == verified["run_id"]]
    assert run.network["engines"] == "mpi" and run.world_size == 2
