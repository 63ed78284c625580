"""Config sections unpacked into library calls."""

import pytest
from flax import nnx

from configs import supervised
from experiments import _common
from mmfuse import models

TASK = _common.Task("toy", ("a", "b"), {"validation": {}}, num_classes=2)


def _fit_kwargs(**mesh):
    config = supervised.get_config()
    config.mesh.update(mesh)
    model = models.MLP(3, (), 2, rngs=nnx.Rngs(0))
    return _common.fit_arguments(config, TASK, model, seed=0)[1]


def test_an_empty_mesh_shape_trains_on_the_default_device():
    assert "mesh" not in _fit_kwargs()


def test_a_mesh_shape_builds_the_mesh_and_names_its_axes():
    kwargs = _fit_kwargs(shape=(1, 1), axes=("data", "model"), param_axis="model")
    assert kwargs["mesh"].axis_names == ("data", "model")
    assert kwargs["data_axis"] == "data" and kwargs["param_axis"] == "model"


def test_a_mesh_larger_than_the_machine_is_a_clear_error():
    with pytest.raises(ValueError, match=r"mesh shape \(64,\) needs 64 devices, have 1"):
        _fit_kwargs(shape=(64,))
