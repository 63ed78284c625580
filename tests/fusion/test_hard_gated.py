"""Hard gated fusion: one expert per example, Gumbel straight-through and REINFORCE."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from mmfuse import fusion
from mmfuse.fusion import HardGateAux, HardGatedFusion, reinforce_surrogate
from mmfuse.fusion import functional as F

IN_DIMS = (3, 4, 5)
OUT = 2
GATE = ("gate_kernel", "gate_bias")


def random_params(seed, in_dims=IN_DIMS, out_dim=OUT, gate_scale=1.0, dtype=jnp.float32):
    """Parameters of ``init_hard_gated``'s layout with every entry random and nonzero."""
    rng = np.random.default_rng(seed)
    layout = F.init_hard_gated(jax.random.key(0), in_dims, out_dim)
    params = jax.tree.map(lambda a: jnp.asarray(rng.normal(size=a.shape), dtype), layout)
    params["gate_kernel"] = params["gate_kernel"] * gate_scale
    return params


def random_inputs(seed, batch, in_dims=IN_DIMS, dtype=jnp.float32):
    rng = np.random.default_rng(seed)
    return tuple(jnp.asarray(rng.normal(size=(batch, d)), dtype) for d in in_dims)


def forced_expert_outputs(params, xs):
    """Each modality's expert output, computed by the operator with the gate forced to it."""
    num_modalities = len(params["kernels"])
    outputs = []
    for m in range(num_modalities):
        forced = dict(params)
        forced["gate_kernel"] = jnp.zeros_like(params["gate_kernel"])
        forced["gate_bias"] = 100.0 * jax.nn.one_hot(m, num_modalities)
        outputs.append(F.hard_gated(forced, xs))
    return jnp.stack(outputs, axis=-2)  # [B, M, C]


def calls(mode):
    if mode == "deterministic":
        return {}
    return dict(key=jax.random.key(11), estimator=mode)


def test_hand_computed_value_float64():
    # d = (1, 2), C = 2, three examples; the gate prefers modality 1 when x_1[0] is large.
    with jax.enable_x64(True):
        params = {
            "kernels": [jnp.array([[1.0, -2.0]]), jnp.array([[0.5, 0.0], [1.0, 3.0]])],
            "biases": [jnp.array([0.1, 0.2]), jnp.array([-0.3, 0.4])],
            "gate_kernel": jnp.array([[1.0, -1.0], [-0.5, 2.0], [0.0, 0.25]]),
            "gate_bias": jnp.array([0.5, -0.5]),
        }
        xs = (jnp.array([[1.0], [-1.0], [0.2]]), jnp.array([[0.0, 1.0], [1.0, 0.0], [2.0, 2.0]]))
        z, aux = F.hard_gated(params, xs, return_aux=True)
        assert z.dtype == jnp.float64
    x1, x2 = (np.asarray(x) for x in xs)
    h1 = x1 @ np.array([[1.0, -2.0]]) + [0.1, 0.2]
    h2 = x2 @ np.array([[0.5, 0.0], [1.0, 3.0]]) + [-0.3, 0.4]
    logits = np.concatenate([x1, x2], axis=1) @ np.asarray(params["gate_kernel"]) + [0.5, -0.5]
    # Example 0: l = (1.5, -1.25); example 1: l = (-1.0, 2.5); example 2: l = (-0.3, 3.8).
    np.testing.assert_allclose(logits, [[1.5, -1.25], [-1.0, 2.5], [-0.3, 3.8]], atol=1e-12)
    expected = np.stack([h1[0], h2[1], h2[2]])
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(np.asarray(z), expected, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(aux.choice, [[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    np.testing.assert_allclose(aux.probs, probs, rtol=0, atol=1e-12)
    np.testing.assert_allclose(aux.log_prob, np.log(probs[[0, 1, 2], [0, 1, 1]]), atol=1e-12)


@pytest.mark.parametrize("mode", ["deterministic", "gumbel", "reinforce"])
@pytest.mark.parametrize("lead", [(32,), (4, 8)], ids=["batch", "batch_time"])
def test_forward_uses_exactly_one_expert_per_example(mode, lead):
    params = random_params(0)
    xs = tuple(x.reshape(*lead, -1) for x in random_inputs(1, 32))
    z, aux = F.hard_gated(params, xs, return_aux=True, **calls(mode))
    assert isinstance(aux, HardGateAux)
    assert aux.choice.shape == (*lead, 3) and aux.log_prob.shape == lead
    assert set(np.unique(aux.choice)) == {0.0, 1.0}
    np.testing.assert_array_equal(np.sum(aux.choice, axis=-1), 1.0)
    chosen = np.argmax(aux.choice, axis=-1)
    assert len(np.unique(chosen)) > 1  # the examples do not all pick one modality
    experts = forced_expert_outputs(params, xs)  # [..., M, C]
    picked = np.take_along_axis(np.asarray(experts), chosen[..., None, None], axis=-2)[..., 0, :]
    np.testing.assert_array_equal(z, picked)
    chosen_probs = np.take_along_axis(np.asarray(aux.probs), chosen[..., None], -1)[..., 0]
    np.testing.assert_allclose(np.exp(aux.log_prob), chosen_probs, rtol=1e-6)
    if mode == "deterministic":
        np.testing.assert_array_equal(chosen, np.argmax(aux.probs, axis=-1))


@pytest.mark.parametrize("estimator", ["gumbel", "reinforce"])
def test_sampled_choices_follow_the_gate_probabilities(estimator):
    params = random_params(2, gate_scale=0.1)
    xs = random_inputs(3, 4)
    num_keys = 4000

    def choice(key):
        return F.hard_gated(params, xs, key=key, estimator=estimator, return_aux=True)[1].choice

    frequencies = jnp.mean(jax.vmap(choice)(jax.random.split(jax.random.key(5), num_keys)), 0)
    probs = np.asarray(F.hard_gated(params, xs, return_aux=True)[1].probs)
    assert probs.min() > 0.05  # every modality is sampled often enough to test
    stderr = np.sqrt(probs * (1 - probs) / num_keys)
    assert np.all(np.abs(frequencies - probs) < 5 * stderr)


def _task_grads(params, xs, target, **kwargs):
    def loss(p):
        return jnp.mean((F.hard_gated(p, xs, **kwargs) - target) ** 2)

    return jax.grad(loss)(params)


def test_gumbel_straight_through_gives_the_gate_gradients():
    params, xs = random_params(4), random_inputs(5, 16)
    target = jax.random.normal(jax.random.key(6), (16, OUT))
    grads = _task_grads(params, xs, target, key=jax.random.key(7), estimator="gumbel")
    for name in GATE:
        assert np.all(np.isfinite(grads[name])) and np.any(grads[name] != 0), name
    # Without the relaxation the hard choice passes no gradient to the gate.
    for kwargs in ({}, dict(key=jax.random.key(7), estimator="reinforce")):
        grads = _task_grads(params, xs, target, **kwargs)
        for name in GATE:
            np.testing.assert_array_equal(grads[name], 0.0)
        assert np.any(grads["kernels"][0] != 0)


def test_straight_through_gradient_is_the_softmax_relaxations_gradient():
    # For a linear loss v·z, the straight-through gradient of the gate is the gradient of
    # v·Σ_m y_soft_m h_m with h held at the experts' values and the same Gumbel noise.
    with jax.enable_x64(True):
        params, xs = random_params(8, dtype=jnp.float64), random_inputs(9, 6, dtype=jnp.float64)
        v = jax.random.normal(jax.random.key(10), (6, OUT), jnp.float64)
        key, temperature = jax.random.key(12), 0.7

        def straight_through(gate):
            z = F.hard_gated({**params, **gate}, xs, key=key, temperature=temperature)
            return jnp.sum(v * z)

        experts = forced_expert_outputs(params, xs)  # [B, M, C]

        def relaxed(gate):
            logits = jnp.concatenate(xs, -1) @ gate["gate_kernel"] + gate["gate_bias"][None]
            noise = jax.random.gumbel(key, logits.shape, logits.dtype)
            y_soft = jax.nn.softmax((logits + noise) / temperature, axis=-1)  # [B, M]
            return jnp.sum(y_soft * jnp.einsum("bmc,bc->bm", experts, v))

        gate = {name: params[name] for name in GATE}
        got, expected = jax.grad(straight_through)(gate), jax.grad(relaxed)(gate)
    for name in GATE:
        assert np.any(np.asarray(expected[name]) != 0)
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-10, atol=1e-12)


def test_temperature_changes_the_gradient_but_not_the_forward_value():
    params, xs = random_params(13), random_inputs(14, 8)
    key = jax.random.key(15)
    cold = F.hard_gated(params, xs, key=key, temperature=0.5)
    hot = F.hard_gated(params, xs, key=key, temperature=5.0)
    np.testing.assert_array_equal(cold, hot)
    target = jnp.zeros((8, OUT))
    g_cold = _task_grads(params, xs, target, key=key, temperature=0.5)["gate_kernel"]
    g_hot = _task_grads(params, xs, target, key=key, temperature=5.0)["gate_kernel"]
    assert not np.allclose(g_cold, g_hot)
    # An array temperature can be annealed under jit without recompiling.
    annealed = jax.jit(lambda t: F.hard_gated(params, xs, key=key, temperature=t))
    np.testing.assert_allclose(annealed(jnp.float32(0.5)), cold, rtol=1e-6, atol=1e-6)


def test_reinforce_surrogate_trains_the_gate_and_the_task_loss_the_experts():
    params, xs = random_params(16, gate_scale=0.3), random_inputs(17, 16)
    target = jax.random.normal(jax.random.key(18), (16, OUT))

    def total(p):
        z, aux = F.hard_gated(p, xs, key=jax.random.key(19), estimator="reinforce", return_aux=True)
        per_example = jnp.sum((z - target) ** 2, axis=-1)
        return jnp.mean(per_example) + reinforce_surrogate(aux.log_prob, per_example)

    grads = jax.grad(total)(params)
    for path, g in jax.tree_util.tree_leaves_with_path(grads):
        assert np.all(np.isfinite(g)), jax.tree_util.keystr(path)
        assert np.any(g != 0), jax.tree_util.keystr(path)


@pytest.mark.parametrize("baseline", [None, 0.0, 3.0], ids=["leave_one_out", "zero", "const"])
def test_reinforce_gradient_is_unbiased_by_exact_enumeration(baseline):
    # Batch of 3, 3 modalities: 27 joint choices. The surrogate's gradient depends on the
    # key only through the joint choice, so weighting one sample per joint choice by its
    # probability gives the estimator's exact expectation, to compare with ∇ E[loss].
    batch, num_modalities = 3, 3
    with jax.enable_x64(True):
        params = random_params(20, gate_scale=0.1, dtype=jnp.float64)
        xs = random_inputs(21, batch, dtype=jnp.float64)
        target = jax.random.normal(jax.random.key(22), (batch, OUT), jnp.float64)
        gate = {name: params[name] for name in GATE}

        def surrogate_grad(key):
            def surrogate(gate):
                z, aux = F.hard_gated(
                    {**params, **gate}, xs, key=key, estimator="reinforce", return_aux=True
                )
                per_example = jnp.sum((z - target) ** 2, axis=-1)
                return reinforce_surrogate(aux.log_prob, per_example, baseline), aux.choice

            return jax.grad(surrogate, has_aux=True)(gate)

        grads, choices = jax.vmap(surrogate_grad)(jax.random.split(jax.random.key(23), 1500))
        probs = F.hard_gated(params, xs, return_aux=True)[1].probs  # [B, M]

        experts = forced_expert_outputs(params, xs)  # [B, M, C]
        losses = jnp.sum((experts - target[:, None, :]) ** 2, axis=-1)  # [B, M]

        def expected_loss(gate):
            logits = jnp.concatenate(xs, -1) @ gate["gate_kernel"] + gate["gate_bias"][None]
            return jnp.mean(jnp.sum(jax.nn.softmax(logits, axis=-1) * losses, axis=-1))

        true_grad = jax.grad(expected_loss)(gate)

    indices = np.argmax(np.asarray(choices), axis=-1)  # [keys, B]
    first_key = {}
    for k, joint in enumerate(map(tuple, indices)):
        first_key.setdefault(joint, k)
    assert len(first_key) == num_modalities**batch
    probs = np.asarray(probs)
    for name in GATE:
        exact = sum(
            np.prod(probs[np.arange(batch), joint]) * np.asarray(grads[name][k])
            for joint, k in first_key.items()
        )
        assert np.any(np.asarray(true_grad[name]) != 0)
        np.testing.assert_allclose(exact, true_grad[name], rtol=1e-10, atol=1e-12)
    # And the enumeration covered all of the probability mass.
    total = sum(np.prod(probs[np.arange(batch), joint]) for joint in first_key)
    np.testing.assert_allclose(total, 1.0, atol=1e-12)
    assert set(first_key) == set(itertools.product(range(num_modalities), repeat=batch))


def test_reinforce_surrogate_value_and_baselines():
    log_prob = jnp.array([-0.5, -1.0, -2.0, -0.25])
    loss = jnp.array([1.0, 2.0, 4.0, 5.0])
    # Leave-one-out baselines: (12 - loss_i) / 3 = (11/3, 10/3, 8/3, 7/3).
    advantage = np.array([1.0 - 11 / 3, 2.0 - 10 / 3, 4.0 - 8 / 3, 5.0 - 7 / 3])
    np.testing.assert_allclose(
        reinforce_surrogate(log_prob, loss), np.mean(advantage * np.asarray(log_prob)), 1e-6
    )
    np.testing.assert_allclose(
        reinforce_surrogate(log_prob, loss, 1.5), np.mean((loss - 1.5) * log_prob), 1e-6
    )
    per_example = jnp.array([0.0, 1.0, 2.0, 3.0])
    np.testing.assert_allclose(
        reinforce_surrogate(log_prob, loss, per_example),
        np.mean((loss - per_example) * log_prob),
        1e-6,
    )
    # The gradient flows into log_prob only, scaled by the advantage / n.
    d_log_prob, d_loss = jax.grad(reinforce_surrogate, argnums=(0, 1))(log_prob, loss)
    np.testing.assert_allclose(d_log_prob, advantage / 4, rtol=1e-6)
    np.testing.assert_array_equal(d_loss, 0.0)
    # A single example has no other examples to form a baseline from.
    np.testing.assert_allclose(reinforce_surrogate(log_prob[:1], loss[:1]), -0.5)


def test_reinforce_surrogate_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"log_prob has shape \(4,\) but loss has shape \(4, 1\)"):
        reinforce_surrogate(jnp.zeros(4), jnp.zeros((4, 1)))
    with pytest.raises(ValueError, match=r"baseline has shape \(3,\)"):
        reinforce_surrogate(jnp.zeros(4), jnp.zeros(4), jnp.zeros(3))


def test_module_matches_the_functional_form_and_flags_itself_stochastic():
    assert HardGatedFusion.stochastic is True
    op = fusion.create("hard_gated", IN_DIMS, OUT, rngs=nnx.Rngs(0), estimator="reinforce")
    assert op.stochastic is True
    xs, key = random_inputs(24, 5), jax.random.key(25)
    z, aux = op(xs, key=key, return_aux=True)
    expected, expected_aux = F.hard_gated(
        op.functional_params(), xs, key=key, estimator="reinforce", return_aux=True
    )
    np.testing.assert_array_equal(z, expected)
    for got, want in zip(aux, expected_aux, strict=True):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(op(xs), F.hard_gated(op.functional_params(), xs))


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("estimator", "straight_through"),
        ("temperature", 0.0),
        ("temperature", -1.0),
        ("temperature", float("inf")),
        ("temperature", "hot"),
        ("temperature", True),
    ],
)
def test_bad_options_raise_naming_the_option(option, value):
    with pytest.raises(ValueError, match=rf"hard_gated: {option}"):
        fusion.create("hard_gated", IN_DIMS, OUT, rngs=nnx.Rngs(0), **{option: value})
    params, xs = random_params(26), random_inputs(27, 2)
    with pytest.raises(ValueError, match=rf"hard_gated: {option}"):
        F.hard_gated(params, xs, key=jax.random.key(0), **{option: value})


def test_temperature_is_one_scalar_and_only_the_gumbel_estimator_takes_one():
    params, xs = random_params(26), random_inputs(27, 2)
    with pytest.raises(ValueError, match=r"temperature must be a scalar, got shape \(2,\)"):
        F.hard_gated(params, xs, key=jax.random.key(0), temperature=jnp.array([0.5, 2.0]))
    with pytest.raises(ValueError, match=r"temperature=0.1 applies to the 'gumbel' estimator"):
        fusion.create(
            "hard_gated", IN_DIMS, OUT, estimator="reinforce", temperature=0.1, rngs=nnx.Rngs(0)
        )
    # the default is no choice of the user's
    assert fusion.create("hard_gated", IN_DIMS, OUT, estimator="reinforce", rngs=nnx.Rngs(0))


def test_needs_at_least_two_modalities():
    with pytest.raises(ValueError, match="hard_gated needs at least 2 modalities"):
        fusion.create("hard_gated", (3,), OUT, rngs=nnx.Rngs(0))


def test_a_numpy_scalar_temperature_is_a_number():
    op = fusion.create("hard_gated", (3, 2), 4, temperature=np.float32(0.5), rngs=nnx.Rngs(0))
    assert op.temperature == 0.5 and type(op.temperature) is float
    for bad in (np.float32(-1.0), np.float64(np.inf), np.True_):
        with pytest.raises(ValueError, match="temperature must be a positive number"):
            fusion.create("hard_gated", (3, 2), 4, temperature=bad, rngs=nnx.Rngs(0))
