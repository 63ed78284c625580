"""pid: exact bitwise decompositions, the PID identities, a convex-solver reference, errors.

Every table is zero-padded to one shape where it can be (zero rows and labels leave
the PID unchanged), so that the solver compiles once for most tests.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmfuse import interactions

SHAPE = (4, 4, 4)
BITS = list(itertools.product((0, 1), repeat=2))


def table(rows, shape=SHAPE):
    """The uniform joint over the given (x1, x2, y) rows, zero-padded to ``shape``."""
    p = np.zeros(shape)
    for row in rows:
        p[row] += 1.0 / len(rows)
    return p


# (name, rows, (R, U1, U2, S)) in bits: the table of Bertschinger et al. (2014) and
# Liang et al. (2023); x1, x2 (and a, b) are uniform bits.
AND_R = 0.75 * np.log2(4 / 3) + 0.25 * np.log2(4) - 0.5  # I(X1;Y) = 0.3113 bits
BITWISE = [
    ("and", [(a, b, a & b) for a, b in BITS], (AND_R, 0, 0, 0.5)),
    ("or", [(a, b, a | b) for a, b in BITS], (AND_R, 0, 0, 0.5)),
    ("xor", [(a, b, a ^ b) for a, b in BITS], (0, 0, 0, 1)),
    ("y_is_x1", [(a, b, a) for a, b in BITS], (0, 1, 0, 0)),
    ("x1_is_x2_is_y", [(a, a, a) for a in (0, 1)], (1, 0, 0, 0)),
    ("pair_and", [(2 * a + b, b, a & b) for a, b in BITS], (AND_R, 0.5, 0, 0)),
    ("pair_xor", [(2 * a + b, b, a ^ b) for a, b in BITS], (0, 1, 0, 0)),
    ("copy", [(a, b, 2 * a + b) for a, b in BITS], (0, 1, 1, 0)),
]


def random_joint(seed, shape=SHAPE, *, zeros=0.3, empty_label=False):
    """A random joint with about ``zeros`` of its cells zero (and optionally a label never seen)."""
    rng = np.random.default_rng(seed)
    p = rng.random(shape) ** 2 * (rng.random(shape) > zeros)
    if empty_label:
        p[:, :, -1] = 0.0
    return p / p.sum()


def mutual_informations(p):
    """(I(X1;Y), I(X2;Y), I(X1,X2;Y)) in bits, in float64 numpy."""

    def mi(pxy):  # [nx, ny]
        outer = pxy.sum(1, keepdims=True) * pxy.sum(0, keepdims=True)
        nz = pxy > 0
        return float(np.sum(pxy[nz] * np.log2(pxy[nz] / outer[nz])))

    return mi(p.sum(1)), mi(p.sum(0)), mi(p.reshape(-1, p.shape[2]))


@pytest.mark.parametrize(
    ("rows", "expected"), [b[1:] for b in BITWISE], ids=[b[0] for b in BITWISE]
)
def test_bitwise_table(rows, expected):
    result = interactions.pid(table(rows))
    np.testing.assert_allclose(result[:4], expected, atol=1e-3)
    assert bool(result.converged) and 1 <= int(result.iterations) <= 3000
    assert float(result.gap) < 1e-4


def test_and_redundancy_is_one_minus_three_quarters_log_three():
    # I(X1;Y) for AND: 1.5 - 0.75 log2 3 = 0.3113 bits, all of it redundant.
    r = interactions.pid(table(BITWISE[0][1])).redundancy
    assert abs(float(r) - (1.5 - 0.75 * np.log2(3))) < 1e-4
    assert abs(AND_R - 0.3113) < 1e-4


@pytest.mark.parametrize(
    "joint",
    [
        random_joint(0),
        random_joint(1, zeros=0.6),
        random_joint(2, empty_label=True),
        random_joint(3, zeros=0.0),
        table(BITWISE[0][1]),
    ],
    ids=["sparse", "sparser", "empty_label", "dense", "and"],
)
def test_identities_and_nonnegativity(joint):
    r, u1, u2, s = (float(v) for v in interactions.pid(joint)[:4])
    i1, i2, i12 = mutual_informations(joint)
    assert min(r, u1, u2, s) >= 0
    np.testing.assert_allclose(r + u1, i1, atol=1e-4)
    np.testing.assert_allclose(r + u2, i2, atol=1e-4)
    np.testing.assert_allclose(r + u1 + u2 + s, i12, atol=1e-4)


def test_minimizer_keeps_the_pairwise_marginals_and_has_no_nan():
    p = random_joint(4, empty_label=True)
    result = interactions.pid(p)
    q = np.asarray(result.q)
    assert np.all(np.isfinite(q)) and np.all(q >= 0)
    np.testing.assert_allclose(q.sum(1), p.sum(1), atol=1e-5)
    np.testing.assert_allclose(q.sum(0), p.sum(0), atol=1e-5)
    assert np.all(q[p.sum(1)[:, None, :].repeat(4, 1) == 0] == 0)  # p(x1, y) = 0 stays 0
    assert float(result.violation) <= 1e-6
    assert all(np.isfinite(float(v)) for v in result[:6])


def test_swapping_the_modalities_swaps_the_unique_terms():
    p = random_joint(5)
    a = interactions.pid(p)
    b = interactions.pid(np.swapaxes(p, 0, 1))
    np.testing.assert_allclose(
        [b.redundancy, b.unique_1, b.unique_2, b.synergy],
        [a.redundancy, a.unique_2, a.unique_1, a.synergy],
        atol=1e-4,
    )


def test_jit_matches_eager():
    p = random_joint(6)
    eager = interactions.pid(p)
    jitted = jax.jit(interactions.pid)(jnp.asarray(p, jnp.float32))
    np.testing.assert_allclose(jitted[:6], eager[:6], rtol=1e-5, atol=1e-6)
    assert int(jitted.iterations) == int(eager.iterations)


def reference_min_i(p, solver):
    """min_{q ∈ Δ_p} I_q(X1,X2;Y) in bits by a convex solver.

    ``I_q = Σ_y Σ_{x1,x2} q(x1,x2,y) log(q(x1,x2,y) / (q(x1,x2) p(y)))`` is a relative
    entropy between q and the product of its own (x1, x2) marginal with p(y), jointly
    convex in q.
    """
    cp = pytest.importorskip("cvxpy")
    n1, n2, ny = p.shape
    p1y, p2y, py = p.sum(1), p.sum(0), p.sum((0, 1))
    labels = [y for y in range(ny) if py[y] > 0]
    qs = {y: cp.Variable((n1, n2), nonneg=True) for y in labels}
    q12 = sum(qs.values())
    constraints = []
    for y in labels:
        constraints += [cp.sum(qs[y], axis=1) == p1y[:, y], cp.sum(qs[y], axis=0) == p2y[:, y]]
    objective = sum(cp.sum(cp.rel_entr(qs[y], py[y] * q12)) for y in labels)
    problem = cp.Problem(cp.Minimize(objective), constraints)
    problem.solve(solver=solver)
    return problem.value / np.log(2)


@pytest.mark.parametrize(
    ("joint", "solver"),
    [
        (random_joint(8, zeros=0.2), "CLARABEL"),
        (random_joint(9, (6, 5, 3), zeros=0.2), "CLARABEL"),
        (random_joint(10, (6, 5, 3), empty_label=True), "SCS"),
    ],
    ids=["4x4x4", "6x5x3", "6x5x3-empty-label-scs"],
)
def test_agrees_with_a_convex_solver(joint, solver):
    best = reference_min_i(joint, solver)
    i1, i2, i12 = mutual_informations(joint)
    result = interactions.pid(joint)
    np.testing.assert_allclose(float(result.synergy), i12 - best, atol=1e-3)
    np.testing.assert_allclose(float(result.redundancy), i1 + i2 - best, atol=1e-3)
    np.testing.assert_allclose(float(result.unique_1), best - i2, atol=1e-3)


def test_float64_reaches_a_tight_certified_gap():
    joint = random_joint(11, (6, 5, 3), zeros=0.2)
    best = reference_min_i(joint, "CLARABEL")
    i12 = mutual_informations(joint)[2]
    with jax.enable_x64(True):
        result = interactions.pid(jnp.asarray(joint, jnp.float64), tol=1e-9, max_iters=20000)
        assert result.synergy.dtype == jnp.float64
        assert bool(result.converged) and float(result.gap) <= 1e-9
        np.testing.assert_allclose(float(result.synergy), i12 - best, atol=1e-6)


def test_converged_means_the_gap_is_within_tol_on_either_side():
    # empirical AND / OR tables (zero cells): in float32 the weak-duality bound crosses
    # the objective by more than tol (-3e-5 and -3e-3 bits), which is rounding, not a
    # certificate; float64 certifies them
    cases = [
        ([[[0.2565, 0.0], [0.23625, 0.0]], [[0.25175, 0.0], [0.0, 0.2555]]], 1e-5),
        ([[[0.226, 0.0], [0.0, 0.27]], [[0.0, 0.266], [0.0, 0.238]]], 1e-3),
    ]
    for joint, tol in cases:
        result = interactions.pid(jnp.asarray(joint, jnp.float32), tol=tol)
        if float(result.gap) < -2 * tol:  # crossed beyond rounding: not certified
            assert not bool(result.converged)
        assert not bool(result.converged) or abs(float(result.gap)) <= 2 * tol
        with jax.enable_x64(True):
            exact = interactions.pid(jnp.asarray(joint, jnp.float64), tol=1e-9, max_iters=5000)
            assert bool(exact.converged) and abs(float(exact.gap)) <= 1e-9
        np.testing.assert_allclose(float(result.synergy), float(exact.synergy), atol=10 * tol)


@pytest.mark.parametrize("shape", [(10, 10, 4), (20, 20, 32)])
def test_float32_dense_tables_converge_with_the_defaults(shape, optimized_compiles):
    # float32 rounding makes the objective rise by a few ulps now and then; that must
    # not restart the momentum (it stalled every one of these short of 1e-6 bits)
    rng = np.random.default_rng(1)
    for _ in range(3):
        joint = rng.dirichlet(np.ones(np.prod(shape))).reshape(shape)
        result = interactions.pid(joint.astype(np.float32))
        assert bool(result.converged), (float(result.gap), int(result.iterations))
        with jax.enable_x64(True):
            exact = interactions.pid(jnp.asarray(joint), tol=1e-9, max_iters=20000)
        np.testing.assert_allclose(float(result.synergy), float(exact.synergy), atol=1e-5)


@pytest.mark.parametrize(
    ("joint", "match"),
    [
        (np.full((2, 2), 0.25), r"3-D probability table .* shape \(2, 2\)"),
        (np.full((2, 2, 2, 1), 1 / 8), r"3-D .* shape \(2, 2, 2, 1\)"),
        (np.zeros((0, 2, 2)), "empty axis"),
        (np.full((2, 2, 2), 0.25), r"sums to 2, not 1"),
        (table(BITWISE[0][1]) * np.where(np.arange(4) == 1, -1, 1), "negative entries"),
        (np.full((2, 2, 2), np.nan), "non-finite"),
        (np.full((2, 2, 2), 1 / 8) + 0.1j, "real probabilities, got dtype complex"),
    ],
    ids=["2d", "4d", "empty", "sum", "negative", "nan", "complex"],
)
def test_bad_joints_name_the_problem(joint, match):
    with pytest.raises(ValueError, match=match):
        interactions.pid(joint)


def test_bad_options():
    p = table(BITWISE[0][1])
    with pytest.raises(ValueError, match="max_iters"):
        interactions.pid(p, max_iters=0)
    with pytest.raises(ValueError, match="tol"):
        interactions.pid(p, tol=-1.0)
    with pytest.raises(ValueError, match="sinkhorn_iters"):
        interactions.pid(p, sinkhorn_iters=1.5)
    # a NumPy or JAX scalar is a number too
    for tol in (np.float32(1e-6), jnp.float32(1e-6)):
        np.testing.assert_allclose(interactions.pid(p, tol=tol)[:4], interactions.pid(p)[:4])


def test_under_jit_only_the_shape_is_checked():
    with pytest.raises(ValueError, match="3-D"):
        jax.jit(interactions.pid)(jnp.ones((2, 2)))
    # A table that does not sum to 1 is normalized under jit.
    p = jnp.asarray(table(BITWISE[2][1]), jnp.float32)
    np.testing.assert_allclose(jax.jit(interactions.pid)(3.0 * p).synergy, 1.0, atol=1e-3)
