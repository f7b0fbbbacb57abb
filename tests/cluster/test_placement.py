"""Device planning and backend choice, with NVML faked (autospec) so no GPU is needed."""

from unittest import mock

import pynvml
import pytest

from parakit.cluster import placement
from parakit.cluster.placement import EngineInfo, Gpu, HostFacts
from parakit.engine import gpus
from parakit.records.engine_facts import EngineIdentity

GPUS = [Gpu(0, "GPU-aaaa"), Gpu(1, "GPU-bbbb"), Gpu(2, "GPU-cccc")]


def facts(gpus=GPUS, cpus=2, memory=24 * 2**30):
    return HostFacts(cpus, memory, list(gpus), None if gpus else "no GPU is visible")


def test_engine_i_gets_gpu_i_mod_g():
    assert [placement.gpu_for_engine(i, GPUS[:2]).index for i in range(4)] == [0, 1, 0, 1]
    assert placement.gpu_for_engine(3, []) is None


def test_user_gpu_list_and_cpu_device():
    chosen = placement.choose_gpus("auto", [0, 2], facts())
    assert [g.index for g in chosen] == [0, 2]
    assert placement.choose_gpus("cpu", None, facts()) == []
    assert placement.choose_gpus("auto", None, facts(gpus=[])) == []


@pytest.mark.parametrize(
    "device, gpus, host, message",
    [
        ("cuda", None, facts(gpus=[]), "device cuda was asked for, but no GPU is visible"),
        ("auto", [5], facts(), "not visible; visible: [0, 1, 2]"),
        ("cpu", [0], facts(), "drop one of them"),
        ("tpu", None, facts(), "device must be one of auto, cpu, cuda"),
    ],
)
def test_bad_device_requests(device, gpus, host, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        placement.choose_gpus(device, gpus, host)


def test_backend_nccl_only_when_every_rank_has_its_own_gpu():
    assert placement.choose_backend(GPUS[:2], nccl_available=True) == ("nccl", None)
    backend, warning = placement.choose_backend([GPUS[0], GPUS[0]], nccl_available=True)
    assert backend == "gloo" and "share 1 GPU" in warning and "not representative" in warning
    assert placement.choose_backend([None, None], nccl_available=True) == ("gloo", None)
    assert placement.choose_backend(GPUS[:2], nccl_available=False)[0] == "gloo"


@pytest.mark.parametrize(("settings", "gpus", "refused"), [
    ({"strategy": "pipeline", "workers": 2}, 1, True),
    ({"strategy": "pipeline", "workers": 2}, 2, False),
    ({"strategy": "pipeline", "workers": 1}, 1, False),
    ({"strategy": "ddp", "workers": 2}, 1, False),
    ({"strategy": "tensor", "workers": 2}, 1, False),
    ({"strategy": "hybrid", "hybrid": "pipeline+ddp", "mesh": "2x2", "workers": 4}, 2, True),
    ({"strategy": "pipeline", "workers": 2}, 0, False),  # CPU engines: gloo sends host memory
    ({"strategy": "context", "workers": 2}, 1, True),  # the ring's sends, like a pipeline's
    ({"strategy": "context", "workers": 2}, 2, False),
    ({"strategy": "expert", "workers": 2, "model_options": {"depth": 4, "experts": 2}}, 1, False),  # a collective
])
def test_a_pipeline_on_ranks_sharing_a_gpu_is_refused(settings, gpus, refused):
    from parakit.config.run import RunConfig

    config = RunConfig(**{"model": "gpt", "model_options": {"depth": 4}, "batch_size": 16, **settings})
    devices = [Gpu(i, f"GPU-{i}") for i in range(gpus)]
    if refused:
        with pytest.raises(ValueError, match="cannot send CUDA memory between them") as e:
            placement.check_gpu_sharing(config, devices)
        assert "\n" not in str(e.value)
    else:
        placement.check_gpu_sharing(config, devices)


def test_more_workers_than_the_machine_holds():
    placement.check_workers(8, facts(cpus=2))
    with pytest.raises(ValueError, match="use workers <= 8"):
        placement.check_workers(9, facts(cpus=2))
    with pytest.raises(ValueError, match="use workers <= 2"):
        placement.check_workers(3, facts(cpus=2, memory=2 * 2**30))


def test_cuda_visible_devices_by_index_and_uuid_in_cuda_order():
    assert [g.index for g in placement.filter_visible(GPUS, "2,0")] == [2, 0]
    assert [g.index for g in placement.filter_visible(GPUS, "GPU-bbbb")] == [1]
    # CUDA stops at the first entry that names no device
    assert [g.index for g in placement.filter_visible(GPUS, "1,7,0")] == [1]
    assert placement.filter_visible(GPUS, "") == []
    assert placement.filter_visible(GPUS, None) == GPUS


@pytest.fixture
def cuda_torch(monkeypatch):
    import torch

    monkeypatch.setattr(torch.backends.cuda, "is_built", lambda: True)
    # NVML not opened yet: a power meter of an earlier test may hold this process's session.
    monkeypatch.setattr(gpus, "NVML", gpus.NvmlSession())


def test_visible_gpus_reads_nvml_without_cuda(cuda_torch, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    with mock.patch.multiple(
        pynvml, autospec=True, nvmlInit=mock.DEFAULT, nvmlShutdown=mock.DEFAULT,
        nvmlDeviceGetCount=mock.DEFAULT, nvmlDeviceGetHandleByIndex=mock.DEFAULT,
        nvmlDeviceGetUUID=mock.DEFAULT,
    ) as nvml:
        nvml["nvmlDeviceGetCount"].return_value = 2
        nvml["nvmlDeviceGetHandleByIndex"].side_effect = lambda i: f"handle{i}"
        nvml["nvmlDeviceGetUUID"].side_effect = lambda h: f"GPU-{h}"
        gpus, reason = placement.visible_gpus()
        nvml["nvmlShutdown"].assert_called_once()
    assert gpus == [Gpu(1, "GPU-handle1")] and reason is None


def test_no_driver_means_cpu_with_a_reason(cuda_torch):
    with mock.patch.object(pynvml, "nvmlInit", autospec=True,
                           side_effect=pynvml.NVMLError(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)):
        gpus, reason = placement.visible_gpus()
    assert gpus == [] and "NVML is not available" in reason


def test_nvml_failing_mid_listing_means_cpu_with_a_reason_and_nvml_closed(cuda_torch):
    with mock.patch.multiple(pynvml, autospec=True, nvmlInit=mock.DEFAULT, nvmlShutdown=mock.DEFAULT,
                             nvmlDeviceGetCount=mock.DEFAULT) as nvml:
        nvml["nvmlDeviceGetCount"].side_effect = pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)
        found, reason = placement.visible_gpus()
        nvml["nvmlShutdown"].assert_called_once()
    assert found == [] and reason.startswith("cannot list GPUs through NVML (") and "GPU is lost" in reason


def test_cpu_build_of_torch_means_no_gpu(monkeypatch):
    import torch

    monkeypatch.setattr(torch.backends.cuda, "is_built", lambda: False)
    assert placement.visible_gpus() == ([], "this torch is a CPU build")


def test_an_engine_identified_by_attribute_is_placed_on_its_host():
    # Two namespaces of one machine ("m"): two hosts, told apart by the namespace's name.
    me = [EngineIdentity(hostname="m", netns=netns, netns_name=name, local_hint=None, cpu_count=4, pid=10 + i)
          for i, (netns, name) in enumerate([("1", None), ("2", "parakit-b"), ("1", None)])]
    placed = placement.place_on_hosts([EngineInfo.identified(i, e) for i, e in enumerate(me)], own_host="m|1")
    assert [(e.engine_id, e.pid, e.cpu_count, e.host_key) for e in placed] == [
        (0, 10, 4, me[0].host_key), (1, 11, 4, "m|2"), (2, 12, 4, "m|1")]
    assert [(e.host, e.host_index, e.local_index) for e in placed] == [
        ("m", 0, 0), ("m/parakit-b", 1, 0), ("m", 0, 1)]
