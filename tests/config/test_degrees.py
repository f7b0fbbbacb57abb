"""The parallel degrees: one object every size is read from."""

import pytest

from parakit.config.degrees import ParallelDims
from parakit.config.run import RunConfig


@pytest.mark.parametrize("settings, data, tensor, pipeline, names", [
    (dict(strategy="single", workers=1), 1, 1, 1, ("data",)),
    (dict(strategy="ddp", workers=4, batch_size=64), 4, 1, 1, ("data",)),
    (dict(strategy="fsdp", workers=2), 2, 1, 1, ("data",)),
    (dict(strategy="tensor", workers=2), 1, 2, 1, ("tensor",)),
    (dict(strategy="pipeline", workers=2), 1, 1, 2, ("pipeline",)),
    (dict(strategy="hybrid", hybrid="fsdp+tensor", mesh="2x2", workers=4), 2, 2, 1, ("data", "tensor")),
    (dict(strategy="hybrid", hybrid="pipeline+ddp", mesh="2x3", workers=6, model="gpt", batch_size=48), 3, 1, 2,
     ("pipeline", "data")),
])
def test_a_run_config_reads_its_sizes_from_its_degrees(settings, data, tensor, pipeline, names):
    config = RunConfig(**settings)
    dims = config.dims
    assert (dims.data, dims.tensor, dims.pipeline, dims.mesh_names) == (data, tensor, pipeline, names)
    assert dims.world == config.workers
    assert (config.data_parallel_size, config.tensor_degree, config.pipeline_ranks) == (data, tensor, pipeline)
    assert dims.mesh_shape == tuple(getattr(dims, n) for n in names)


def test_coordinates_follow_the_grid_last_dimension_fastest():
    dims = ParallelDims(data=2, tensor=2, mesh_names=("data", "tensor"))
    assert [dims.coordinates(r) for r in range(4)] == [
        {"data": 0, "tensor": 0}, {"data": 0, "tensor": 1}, {"data": 1, "tensor": 0}, {"data": 1, "tensor": 1}]
    assert dims.tensor_enabled and dims.data_enabled and not dims.pipeline_enabled
    with pytest.raises(ValueError, match="rank 4 is not on a mesh of 4 ranks"):
        dims.coordinates(4)


@pytest.mark.parametrize("kwargs, message", [
    (dict(data=0), "the data-parallel degree must be an integer >= 1 (got 0)"),
    (dict(tensor=1.5), "the tensor-parallel degree must be an integer >= 1 (got 1.5)"),
    (dict(mesh_names=("expert",)), "mesh dimension 'expert' is not data, tensor, pipeline or context"),
])
def test_degrees_check_themselves(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ParallelDims(**kwargs)
