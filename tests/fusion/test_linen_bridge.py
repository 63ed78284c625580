"""Every fusion operator works as a Linen module through ``nnx.bridge.to_linen``."""

import jax
import numpy as np
import pytest
from flax import linen as nn
from flax import nnx

from mmfuse import fusion
from tests.fusion.specs import SPECS
from tests.fusion.test_contract import OUT, build, make_inputs


class LinenModel(nn.Module):
    """A Linen model whose fusion layer is an mmfuse operator."""

    name_: str

    @nn.compact
    def __call__(self, xs):
        spec = SPECS[self.name_]
        cls = fusion.get(self.name_)
        z = nnx.bridge.to_linen(cls, spec["in_dims"], OUT, **spec["options"], name="fusion")(xs)
        return nn.Dense(1)(nn.relu(z))  # [B, 1]


@pytest.mark.parametrize("name", fusion.names())
def test_an_operator_inside_a_linen_model_computes_the_nnx_operator(name):
    spec = SPECS[name]
    xs = make_inputs(spec["in_dims"], (6,))
    model = LinenModel(name)
    variables = model.init(jax.random.key(0), xs)
    # the NNX operator's parameters, in Linen's layout, give the NNX operator's outputs
    op = build(name, seed=1)
    params = nnx.to_pure_dict(nnx.state(op, nnx.Param))
    assert jax.tree.structure(params) == jax.tree.structure(variables["params"]["fusion"])
    layer = nnx.bridge.to_linen(fusion.get(name), spec["in_dims"], OUT, **spec["options"])
    z = jax.jit(layer.apply)({"params": params}, xs)  # [6, OUT]
    np.testing.assert_allclose(z, op(xs), rtol=1e-6, atol=1e-6)
    # and the Linen model trains through it
    variables = {"params": {**variables["params"], "fusion": params}}
    grads = jax.grad(lambda v: model.apply(v, xs).sum())(variables)["params"]["fusion"]
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
    assert any(np.any(g != 0) for g in jax.tree.leaves(grads))
