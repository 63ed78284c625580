"""ResidualFusion and multimodal residual optimization: branches, gradient routing, training."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from mmfuse import models
from tests.models.zoo import normal

B, C = 5, 3


def mse(pred, target):
    return jnp.mean(jnp.square(pred - target))


@pytest.mark.parametrize(
    ("in_dims", "subsets"),
    [
        ((3, 4), ((0,), (1,), (0, 1))),
        ((3, 4, 2), ((0,), (1,), (2,), (0, 1), (0, 2), (1, 2), (0, 1, 2))),
    ],
    ids=["M2", "M3"],
)
def test_branches_and_shapes(in_dims, subsets):
    model = models.ResidualFusion(in_dims, C, hidden_dims=(6,), rngs=nnx.Rngs(0))
    assert model.subsets == subsets
    xs = [normal(m, (B, d)) for m, d in enumerate(in_dims)]
    by_subset = model.subset_outputs(xs)
    by_order = model.branch_outputs(xs)
    assert sorted(by_order) == list(range(1, len(in_dims) + 1))
    assert all(out.shape == (B, C) for out in by_order.values())
    for order, out in by_order.items():
        expected = sum(v for k, v in by_subset.items() if len(k) == order)
        np.testing.assert_allclose(out, expected, rtol=1e-6)
    np.testing.assert_allclose(model(xs), sum(by_order.values()), rtol=1e-5, atol=1e-6)
    # The bimodal branch of (0, 1) reads the concatenation [x_0; x_1].
    features = jnp.concatenate([xs[0], xs[1]], axis=-1)
    np.testing.assert_allclose(by_subset[(0, 1)], model.branches[len(in_dims)](features))


def test_max_order_limits_the_branches():
    model = models.ResidualFusion((3, 4, 2), C, hidden_dims=(), max_order=2, rngs=nnx.Rngs(0))
    assert max(len(s) for s in model.subsets) == 2 and len(model.subsets) == 6


def test_higher_order_loss_sends_no_gradient_to_lower_orders():
    model = models.ResidualFusion((3, 4, 2), C, hidden_dims=(6,), rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model, nnx.Param)
    xs = [normal(m, (B, d)) for m, d in enumerate((3, 4, 2))]
    target = normal(9, (B, C))

    def loss(params, orders):
        outs = nnx.merge(graphdef, params).branch_outputs(xs)
        return models.residual_loss({k: outs[k] for k in orders}, target, mse)

    def branch_grads(orders):
        grads = jax.grad(loss)(params, orders)
        return [
            max(float(jnp.max(jnp.abs(leaf))) for leaf in jax.tree.leaves(g))
            for g in grads["branches"].values()
        ]

    full = branch_grads((1, 2, 3))
    # The order-1 term alone, and with the order-2 term: the unimodal gradients agree
    # exactly, so the bimodal term contributes nothing to them.
    uni_only = jax.grad(loss)(params, (1,))["branches"]
    uni_and_bi = jax.grad(loss)(params, (1, 2))["branches"]
    for m in range(3):
        for a, b in zip(jax.tree.leaves(uni_only[m]), jax.tree.leaves(uni_and_bi[m]), strict=True):
            np.testing.assert_array_equal(a, b)

    # The bimodal term alone (orders 1 and 2 minus order 1): its gradient wrt the
    # unimodal branches is exactly zero.
    def bimodal_term(params):
        outs = nnx.merge(graphdef, params).branch_outputs(xs)
        with_bimodal = models.residual_loss({1: outs[1], 2: outs[2]}, target, mse)
        return with_bimodal - models.residual_loss({1: outs[1]}, target, mse)

    grads = jax.grad(bimodal_term)(params)["branches"]
    for m in range(3):
        assert all(float(jnp.max(jnp.abs(leaf))) == 0.0 for leaf in jax.tree.leaves(grads[m]))
    assert all(g > 0 for g in full)  # every branch learns from its own term


def test_penalty_adds_the_mean_square_of_the_interactions():
    outs = {1: jnp.ones((B, C)), 2: 2.0 * jnp.ones((B, C))}
    target = jnp.zeros((B, C))
    plain = models.residual_loss(outs, target, mse)
    np.testing.assert_allclose(plain, 1.0 + 9.0)
    np.testing.assert_allclose(models.residual_loss(outs, target, mse, penalty=0.5), 10.0 + 2.0)
    # the weight may be traced, e.g. scheduled inside a jitted step
    scheduled = jax.jit(lambda w: models.residual_loss(outs, target, mse, penalty=w))
    np.testing.assert_allclose(scheduled(0.5), 12.0)
    np.testing.assert_allclose(scheduled(0.0), 10.0)


def test_interaction_share():
    u = normal(0, (B, C))
    np.testing.assert_allclose(models.interaction_share({1: u, 2: jnp.ones((B, C))}), 0.0)
    np.testing.assert_allclose(models.interaction_share({1: jnp.ones((B, C)), 2: u}), 1.0)
    np.testing.assert_allclose(models.interaction_share({1: u, 2: u}), 0.5, rtol=1e-6)
    assert float(models.interaction_share({1: jnp.ones((B, C))})) == 0.0


def test_bad_inputs_name_the_modality_and_shapes():
    model = models.ResidualFusion((3, 4), C, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"modality 1 has feature size 5 \(shape \(5, 5\)\)"):
        model([normal(0, (B, 3)), normal(1, (B, 5))])
    with pytest.raises(ValueError, match="expected 2 modalities, got 3"):
        model([normal(0, (B, 3)), normal(1, (B, 4)), normal(2, (B, 4))])
    with pytest.raises(ValueError, match=r"modality 1 has batch dims \(4,\)"):
        model([normal(0, (B, 3)), normal(1, (4, 4))])
    with pytest.raises(ValueError, match="ResidualFusion needs at least 2 modalities"):
        models.ResidualFusion((3,), C, rngs=nnx.Rngs(0))
    # the MLP branches' options are checked under this model's name
    for option, message in (
        ({"activation": "elu"}, "activation='elu' is not one of"),
        ({"compute_dtype": "int8"}, "compute_dtype must be a floating dtype"),
        ({"hidden_dims": (0,)}, r"hidden_dims\[0\] must be a positive int"),
    ):
        with pytest.raises(ValueError, match=f"^ResidualFusion: {message}"):
            models.ResidualFusion((3, 4), C, rngs=nnx.Rngs(0), **option)
    assert models.ResidualFusion(np.array([3, 4]), C, rngs=nnx.Rngs(0)).in_dims == (3, 4)
    with pytest.raises(ValueError, match="residual_loss: penalty must be a finite number >= 0"):
        models.residual_loss({1: jnp.ones((B, C))}, jnp.zeros((B, C)), mse, penalty=-1.0)
    with pytest.raises(ValueError, match="max_order"):
        models.ResidualFusion((3, 4), C, max_order=3, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="order 1"):
        models.residual_loss({2: jnp.ones((B, C))}, jnp.zeros((B, C)), mse)
    with pytest.raises(ValueError, match=r"order-2 output has shape \(5, 2\)"):
        models.interaction_share({1: jnp.ones((B, C)), 2: jnp.ones((B, 2))})
    with pytest.raises(ValueError, match=r"outputs must be \[B, C\] .* got shape \(4,\)"):
        models.interaction_share({1: jnp.arange(4.0), 2: jnp.arange(4.0)})  # [B]: no C axis
    # the model itself takes one unbatched example, and so works under vmap
    model = models.ResidualFusion((3, 4), C, rngs=nnx.Rngs(0))
    one = model((jnp.ones(3), jnp.ones(4)))
    batched = jax.vmap(lambda a, b: model((a, b)))(jnp.ones((5, 3)), jnp.ones((5, 4)))
    assert one.shape == (C,) and batched.shape == (5, C)
    with pytest.raises(ValueError, match=r"must hold orders 1..K, got \[1, 3\]"):
        models.residual_loss({1: jnp.ones((B, C)), 3: jnp.ones((B, C))}, jnp.zeros((B, C)), mse)


def train_share(x1, x2, y, steps=300):
    """Interaction share after full-batch MRO training with Adam (binary cross-entropy)."""
    model = models.ResidualFusion((1, 1), 1, hidden_dims=(16,), rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model)
    optimizer = optax.adam(1e-2)
    xs = (jnp.asarray(x1), jnp.asarray(x2))
    target = jnp.asarray(y, jnp.float32)[:, None]  # [N, 1]

    def bce(logits, labels):
        return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, labels))

    def loss(params):
        outs = nnx.merge(graphdef, params).branch_outputs(xs)
        return models.residual_loss(outs, target, bce, penalty=1e-3)

    @jax.jit
    def train(params):
        def step(carry, _):
            params, state = carry
            grads = jax.grad(loss)(params)
            updates, state = optimizer.update(grads, state, params)
            return (optax.apply_updates(params, updates), state), None

        (params, _), _ = jax.lax.scan(step, (params, optimizer.init(params)), None, steps)
        return models.interaction_share(nnx.merge(graphdef, params).branch_outputs(xs))

    return float(train(params))


def test_training_uses_interactions_only_where_they_help():
    rng = np.random.default_rng(0)
    x1, x2 = rng.standard_normal((2, 1000, 1)).astype(np.float32)
    additive = (x1[:, 0] + x2[:, 0] + 0.3 * rng.standard_normal(1000)) > 0
    xor = (x1[:, 0] > 0) != (x2[:, 0] > 0)
    assert train_share(x1, x2, additive) < 0.1
    assert train_share(x1, x2, xor) > 0.5
