"""What an engine says about itself, run in this process (no engines): where it is
(network.identify) and what it was pinned to (devices.pin), as typed records."""

from __future__ import annotations

import os
import pickle
import socket

import pytest
import torch

from parakit.engine import devices, network
from parakit.engine.state import STATE
from parakit.records.engine_facts import EngineIdentity, PinnedDevice


def test_identify_says_which_process_on_which_host(monkeypatch):
    for name in ("OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SLURM_LOCALID", "3")  # a launcher's hint of the local rank
    me = network.identify()
    assert isinstance(me, EngineIdentity)
    assert (me.hostname, me.pid, me.local_hint) == (socket.gethostname(), os.getpid(), 3)
    assert me.cpu_count == len(os.sched_getaffinity(0)) >= 1
    assert me.netns == str(os.stat("/proc/self/ns/net").st_ino)
    assert me.host_key == f"{socket.gethostname()}|{me.netns}"
    assert pickle.loads(pickle.dumps(me)) == me  # as ipyparallel sends it back


def test_identify_has_no_local_hint_without_a_launcher(monkeypatch):
    for name in ("OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID"):
        monkeypatch.delenv(name, raising=False)
    assert network.identify().local_hint is None


@pytest.fixture
def unpinned(monkeypatch):
    """This process as an engine not yet pinned; its environment, STATE and threads restored after."""
    if torch.cuda.is_initialized():
        pytest.skip("CUDA is initialised in this process: pin() refuses, rightly")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "untouched")
    monkeypatch.setattr(STATE, "gpu_uuid", None)
    monkeypatch.setattr(STATE, "pinned", False)
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_pinning_to_the_cpu_hides_every_gpu_and_says_so(unpinned):
    got = devices.pin(None, 1)
    assert got == PinnedDevice(pid=os.getpid(), host=socket.gethostname(), gpu_index=None, gpu_uuid=None,
                               device="cpu", device_name=devices.cpu_name(), threads=1)
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "" and torch.get_num_threads() == 1 and STATE.pinned


def test_pinning_on_a_host_asked_for_cpu_reports_no_gpu(unpinned):
    got = devices.pin_on_host("cpu", None, local_index=1, threads=2)
    assert (got.device, got.gpu_index, got.gpu_uuid, got.threads) == ("cpu", None, None, 2)
