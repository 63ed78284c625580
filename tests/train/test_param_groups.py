"""mmfuse.train.scale_by_path: parameter groups frozen or at their own learning rate."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from mmfuse import fusion, models
from mmfuse.train import param_path, scale_by_path


def _model():
    rngs = nnx.Rngs(0)
    encoders = [models.MLP(3, (4,), 2, rngs=rngs), models.MLP(5, (), 2, rngs=rngs)]
    op = fusion.create("tensor", (2, 2), 3, rngs=rngs)
    return models.FusionModel(encoders, op, models.MLP(3, (), 2, rngs=rngs))


def _paths(tree):
    return {param_path(p): np.asarray(v) for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _steps(optimizer, params, num_steps=3):
    state = optimizer.init(params)
    grads = jax.tree.map(lambda x: jnp.full_like(x, 0.5), params)
    for _ in range(num_steps):
        updates, state = optimizer.update(grads, state, params)
        params = optax.apply_updates(params, updates)
    return params, state


def test_paths_name_the_module_attributes():
    paths = set(_paths(nnx.state(_model(), nnx.Param)))
    assert "encoders/0/layers/1/kernel" in paths and "head/layers/0/bias" in paths
    assert all(p.split("/")[0] in ("encoders", "fusion", "head") for p in paths)


def test_a_frozen_group_never_moves_and_keeps_no_optimizer_state():
    params = nnx.state(_model(), nnx.Param)
    adamw = optax.adamw(0.1, weight_decay=0.5)  # decay would move a frozen weight too
    frozen = scale_by_path(adamw, {"encoders/0": 0.0}, params)
    new, state = _steps(frozen, params)
    before, after = _paths(params), _paths(new)
    for path in before:
        moved = not np.array_equal(before[path], after[path])
        assert moved != path.startswith("encoders/0/"), path
    # Adam's two moments are kept for the trained parameters only
    trained = sum(v.size for p, v in before.items() if not p.startswith("encoders/0/"))
    moments = sum(np.size(x) for x in jax.tree.leaves(state) if np.ndim(x) > 0)
    assert moments == 2 * trained
    # the other parameters move exactly as under the plain optimizer
    plain = _paths(_steps(adamw, params)[0])
    for path, value in after.items():
        if not path.startswith("encoders/0/"):
            np.testing.assert_allclose(value, plain[path], rtol=1e-6, err_msg=path)


def test_a_scaled_group_moves_by_its_factor_times_the_plain_update():
    params = nnx.state(_model(), nnx.Param)
    sgd = optax.sgd(0.1)
    factors = {"head": np.float32(0.25), "fusion": 2}  # numpy and Python numbers alike
    new, _ = _steps(scale_by_path(sgd, factors, params), params, 1)
    before, after, plain = _paths(params), _paths(new), _paths(_steps(sgd, params, 1)[0])
    for path in before:
        factor = {"head": 0.25, "fusion": 2.0}.get(path.split("/")[0], 1.0)
        np.testing.assert_allclose(
            after[path] - before[path], factor * (plain[path] - before[path]), rtol=1e-5
        )


def test_gradient_clipping_sees_every_trained_parameter_at_once():
    params = nnx.state(_model(), nnx.Param)
    clipped = optax.chain(optax.clip_by_global_norm(0.1), optax.sgd(1.0))
    # the frozen group is left out; the head keeps its factor 1: exactly the plain update
    new, _ = _steps(scale_by_path(clipped, {"head": 1.0, "fusion": 0.0}, params), params, 1)
    rest = {k: v for k, v in _paths(params).items() if not k.startswith("fusion/")}
    grads = np.sqrt(sum(0.25 * v.size for v in rest.values()))  # the global norm, fusion out
    for path, value in rest.items():
        np.testing.assert_allclose(value - _paths(new)[path], 0.5 * 0.1 / grads, rtol=1e-5)


def test_prefixes_match_whole_path_components():
    params = {"encoders": {str(i): jnp.ones(2) for i in range(12)}}
    new, _ = _steps(scale_by_path(optax.sgd(1.0), {"encoders/1": 0.0}, params), params, 1)
    assert np.array_equal(new["encoders"]["1"], params["encoders"]["1"])
    assert not np.array_equal(new["encoders"]["10"], params["encoders"]["10"])


def test_bad_groups_are_named():
    params = nnx.state(_model(), nnx.Param)
    with pytest.raises(
        ValueError, match=r"no parameter's path starts with 'encoder'; paths start "
    ):
        scale_by_path(optax.adam(1e-3), {"encoder": 0.0}, params)
    with pytest.raises(ValueError, match=r"the factor of 'head' must be finite and >= 0, got -1"):
        scale_by_path(optax.adam(1e-3), {"head": -1}, params)
    with pytest.raises(ValueError, match=r"the factor of 'head' must be finite and >= 0, got True"):
        scale_by_path(optax.adam(1e-3), {"head": True}, params)
