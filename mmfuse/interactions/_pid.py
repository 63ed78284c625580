"""Partial information decomposition (PID) of a discrete joint ``p(x1, x2, y)``.

Two modalities X1, X2 carry ``I(X1, X2; Y)`` about a label Y. The decomposition of
Bertschinger et al. (2014), used by Liang et al. (2023) to quantify multimodal
interactions, splits it into redundancy R (in both), uniqueness U1, U2 (in one only)
and synergy S (in neither alone) through the convex problem

    q* = argmin_{q ∈ Δ_p} I_q(X1, X2; Y),
    Δ_p = {q : q(x1, y) = p(x1, y), q(x2, y) = p(x2, y)},

whose members keep each modality's relation to the label and only change how the
modalities combine. With ``I* = I_q*(X1, X2; Y)`` and ``I_q(Xm; Y) = I_p(Xm; Y)`` on Δ_p:
``R = I(X1;Y) + I(X2;Y) − I*``, ``U1 = I* − I(X2;Y)``, ``U2 = I* − I(X1;Y)``,
``S = I_p(X1,X2;Y) − I*``. So R + U1 = I(X1;Y), R + U2 = I(X2;Y) and
R + U1 + U2 + S = I(X1,X2;Y).

Solver. With ``Q(x1, x2) = Σ_y q(x1, x2, y)``, ``I_q(X1,X2;Y) = KL(q ‖ Q ⊗ p_Y) =
min_r KL(q ‖ r ⊗ p_Y)`` over distributions r on (x1, x2), jointly convex in (q, r).
Minimizing alternately over r (``r = Q``) and over q ∈ Δ_p (the KL projection of the
kernel ``r(x1, x2) p(y)``: per label, Sinkhorn scaling of r to the marginals
``p(x1, y)``, ``p(x2, y)``) is mirror descent with the entropy mirror map and step 1,
which converges because the objective is 1-smooth relative to the entropy. We
accelerate it with Nesterov momentum on ``log r`` (restarted whenever the objective
rises) and run everything in log space, warm-starting the Sinkhorn scalings.

Certificate. For any log-scalings ``a(x1, y)``, ``b(x2, y)``, weak duality gives the lower
bound ``min_{Δ_p} I ≥ Σ p(x1,y) a + Σ p(x2,y) b − log max_{x1,x2} Σ_y p(y) e^{a+b}``,
tight at the optimum. Each iteration ends with a plain (unaccelerated) step, whose
scalings give this bound; ``gap`` is the objective there minus the bound.

References:
  Bertschinger, Rauh, Olbrich, Jost and Ay, "Quantifying Unique Information",
  Entropy 2014.
  Liang et al., "Quantifying & Modeling Multimodal Interactions: An Information
  Decomposition Framework", NeurIPS 2023.
  Lu, Freund and Nesterov, "Relatively Smooth Convex Optimization by First-Order
  Methods, and Applications", SIAM J. Optim. 2018.
  Cuturi, "Sinkhorn Distances: Lightspeed Computation of Optimal Transport", NeurIPS 2013.
  O'Donoghue and Candès, "Adaptive Restart for Accelerated Gradient Schemes", FoCM 2015.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mmfuse.fusion._core import python_scalar
from mmfuse.interactions._checks import check_positive_int

LOG2 = math.log(2.0)
# How far (absolute) the entries of a concrete joint may sum from 1 before pid refuses it.
SUM_TOLERANCE = 1e-4


class PID(NamedTuple):
    """The partial information decomposition of ``p(x1, x2, y)``, in bits.

    The first four fields are the decomposition, so ``r, u1, u2, s = pid(joint)[:4]``.
    All are scalars (``q`` excepted), float32 (float64 for float64 joints under
    ``jax_enable_x64``).

    Attributes:
      redundancy: R, the information about Y in both X1 and X2.
      unique_1: U1, the information about Y in X1 only.
      unique_2: U2, the information about Y in X2 only.
      synergy: S, the information about Y in (X1, X2) together but in neither alone.
      gap: a bound on how far the computed ``I_q(X1,X2;Y)`` is above its minimum over Δ_p,
        in bits (objective minus a weak-duality lower bound). The four terms are each
        within about ``gap`` of the exact ones (plus the constraint ``violation``'s
        effect). It can be slightly negative from rounding.
      violation: the largest absolute error of q's marginals ``q(x1, y)``, ``q(x2, y)``
        against p's (probability units, not bits).
      converged: whether ``-tol <= gap <= tol`` (up to the objective's rounding) and
        ``violation <= tol`` were reached within ``max_iters``. When False the terms
        are usually still far more accurate than ``gap`` says, but are not
        certified: e.g. in float32 on joints with zero cells (a label that is a
        function of the modalities), whose marginal violation can stall near 1e-5;
        ``jax_enable_x64`` with a float64 joint certifies those.
      iterations: int32, the iterations run.
      q: ``[n1, n2, ny]``, the minimizer q* found.
    """

    redundancy: jax.Array
    unique_1: jax.Array
    unique_2: jax.Array
    synergy: jax.Array
    gap: jax.Array
    violation: jax.Array
    converged: jax.Array
    iterations: jax.Array
    q: jax.Array


def check_joint(joint: jax.typing.ArrayLike, name: str = "pid") -> jax.Array:
    """Checks ``joint``, a ``[n1, n2, ny]`` probability table.

    The rank is always checked; the values only when they are concrete (not under
    ``jax.jit``, where a table that does not sum to 1 is silently normalized).

    Raises:
      ValueError: not 3-D, empty, or (concrete values) non-finite, negative entries,
        or a sum further than ``SUM_TOLERANCE`` from 1.

    Returns:
      The table as a float array (at least float32), not yet normalized.
    """
    p = jnp.asarray(joint)
    if p.ndim != 3:
        raise ValueError(
            f"{name}: joint must be a 3-D probability table [n1, n2, ny] of p(x1, x2, y), "
            f"got shape {p.shape}"
        )
    if p.size == 0:
        raise ValueError(f"{name}: joint has an empty axis, shape {p.shape}")
    if jnp.issubdtype(p.dtype, jnp.complexfloating):
        raise ValueError(f"{name}: joint must hold real probabilities, got dtype {p.dtype}")
    if not jnp.issubdtype(p.dtype, jnp.floating) or jnp.finfo(p.dtype).bits < 32:
        p = p.astype(jnp.float32)
    try:
        values = np.asarray(p, dtype=np.float64)
    except jax.errors.TracerArrayConversionError:
        values = None  # traced: only the shape can be checked
    if values is not None:
        if not np.all(np.isfinite(values)):
            raise ValueError(f"{name}: joint has {np.sum(~np.isfinite(values))} non-finite entries")
        if np.any(values < 0):
            worst = np.unravel_index(np.argmin(values), values.shape)
            raise ValueError(
                f"{name}: joint has {np.sum(values < 0)} negative entries (smallest "
                f"{values[worst]:.3g} at {tuple(int(i) for i in worst)}); probabilities "
                "must be >= 0"
            )
        total = float(values.sum())
        if abs(total - 1.0) > SUM_TOLERANCE:
            raise ValueError(
                f"{name}: joint sums to {total:.6g}, not 1 (tolerance {SUM_TOLERANCE}); "
                "pass a probability table, e.g. counts / counts.sum()"
            )
    return p


def _log(x: jax.Array) -> jax.Array:
    """``log x`` with ``log 0 = -inf`` and no NaN from the masked branch."""
    positive = x > 0
    return jnp.where(positive, jnp.log(jnp.where(positive, x, 1.0)), -jnp.inf)


def _logsumexp(x: jax.Array, axis: int) -> jax.Array:
    """``log Σ exp x`` over ``axis``; ``-inf`` (not NaN) where every entry is ``-inf``."""
    peak = jnp.max(x, axis=axis, keepdims=True)
    peak = jnp.where(jnp.isfinite(peak), peak, 0.0)
    return jnp.log(jnp.sum(jnp.exp(x - peak), axis=axis)) + jnp.squeeze(peak, axis)


def _plogp_ratio(p: jax.Array, log_ratio: jax.Array) -> jax.Array:
    """``Σ p · log_ratio`` with ``0 · anything = 0``."""
    return jnp.sum(jnp.where(p > 0, p * jnp.where(p > 0, log_ratio, 0.0), 0.0))


def mutual_informations(p: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(I(X1;Y), I(X2;Y), I(X1,X2;Y))`` in nats for a normalized ``p: [n1, n2, ny]``."""
    p1y, p2y = jnp.sum(p, axis=1), jnp.sum(p, axis=0)  # [n1, ny], [n2, ny]
    py = jnp.sum(p1y, axis=0)  # [ny]
    p1, p2, p12 = jnp.sum(p1y, axis=1), jnp.sum(p2y, axis=1), jnp.sum(p, axis=2)
    log_py = _log(py)
    i1 = _plogp_ratio(p1y, _log(p1y) - _log(p1)[:, None] - log_py[None, :])
    i2 = _plogp_ratio(p2y, _log(p2y) - _log(p2)[:, None] - log_py[None, :])
    i12 = _plogp_ratio(p, _log(p) - _log(p12)[:, :, None] - log_py[None, None, :])
    return i1, i2, i12


class _Solution(NamedTuple):
    log_q: jax.Array  # [n1, n2, ny]
    objective: jax.Array  # I_q(X1, X2; Y) in nats
    gap: jax.Array  # in bits
    violation: jax.Array
    iterations: jax.Array


def _certified(solution: _Solution, tol: float) -> jax.Array:
    """``gap`` and ``violation`` within ``tol``, the gap on both sides: below ``-tol`` (plus
    the objective's rounding) the bound crossed the objective, so nothing is certified."""
    eps = jnp.finfo(solution.gap.dtype).eps
    rounding = 16 * eps * jnp.maximum(1.0, jnp.abs(solution.objective) / LOG2)  # bits
    gap_ok = (solution.gap <= tol) & (solution.gap >= -(tol + rounding))
    return gap_ok & (solution.violation <= tol)


def _minimize_synergy_objective(
    p: jax.Array, tol: jax.Array, max_iters: int, sinkhorn_iters: int
) -> _Solution:
    """``min_{q ∈ Δ_p} I_q(X1,X2;Y)`` by accelerated alternating KL projections (see above).

    q is kept as ``log q = log r(x1,x2) + a(x1,y) + b(x2,y)`` on the cells where both
    ``p(x1, y) > 0`` and ``p(x2, y) > 0`` (every member of Δ_p vanishes elsewhere),
    ``-inf`` off them; labels with ``p(y) = 0`` have no cells at all.
    """
    p1y, p2y = jnp.sum(p, axis=1), jnp.sum(p, axis=0)  # [n1, ny], [n2, ny]
    py = jnp.sum(p1y, axis=0)  # [ny]
    log_p1y, log_p2y, log_py = _log(p1y), _log(p2y), _log(py)
    valid_1, valid_2 = p1y > 0, p2y > 0
    support = valid_1[:, None, :] & valid_2[None, :, :]  # [n1, n2, ny]
    has_support = jnp.any(support, axis=-1)  # [n1, n2]
    # log p(y) on the labels that occur; unused (masked) elsewhere.
    log_py_safe = jnp.where(py > 0, log_py, 0.0)
    neg_inf = jnp.asarray(-jnp.inf, p.dtype)

    def log_q_of(log_r, a, b):
        logits = log_r[:, :, None] + a[:, None, :] + b[None, :, :]  # [n1, n2, ny]
        return jnp.where(support, logits, neg_inf)

    def sinkhorn(log_r, a, b):
        # Alternate the exact fits of q(x1, y) and then q(x2, y), label by label at once.
        # Cells off the support hold -inf in log_r, a or b, so the sums skip them.
        for _ in range(sinkhorn_iters):
            rows = _logsumexp(log_r[:, :, None] + b[None, :, :], 1)  # [n1, ny]
            a = jnp.where(valid_1, log_p1y - rows, neg_inf)
            cols = _logsumexp(log_r[:, :, None] + a[:, None, :], 0)  # [n2, ny]
            b = jnp.where(valid_2, log_p2y - cols, neg_inf)
        return a, b

    def objective(log_q):
        log_q12 = _logsumexp(log_q, 2)  # [n1, n2], log Q(x1, x2)
        ratio = log_q - log_q12[:, :, None] - log_py_safe[None, None, :]
        return _plogp_ratio(jnp.exp(log_q), ratio), log_q12

    def lower_bound(a, b):
        # Weak duality with the kernel r ⊗ p_Y: a' = a - log p(y) absorbs p(y).
        a_dual = jnp.where(valid_1, a - log_py_safe[None, :], neg_inf)  # [n1, ny]
        w = jnp.sum(
            jnp.exp(a_dual[:, None, :] + b[None, :, :] + log_py_safe[None, None, :]), axis=-1
        )
        return _plogp_ratio(p1y, a_dual) + _plogp_ratio(p2y, b) - jnp.log(jnp.max(w))

    def violation_of(log_q):
        q = jnp.exp(log_q)
        return jnp.maximum(
            jnp.max(jnp.abs(jnp.sum(q, axis=1) - p1y)), jnp.max(jnp.abs(jnp.sum(q, axis=0) - p2y))
        )

    def step(carry):
        log_r, a, b, _, log_q12_prev, f_prev, t, _, _, k = carry
        # The accelerated step: project the extrapolated kernel, then take Q of the result.
        a, b = sinkhorn(log_r, a, b)
        _, log_q12 = objective(log_q_of(log_r, a, b))
        # A plain step from there, whose scalings certify the objective it reaches.
        a, b = sinkhorn(log_q12, a, b)
        log_q = log_q_of(log_q12, a, b)
        f, log_q12_new = objective(log_q)
        gap = (f - lower_bound(a, b)) / LOG2
        # Restart the momentum whenever the objective rises (O'Donoghue and Candès) by
        # more than its rounding: in float32, rises of a few ulps are noise, and
        # restarting on them stalls the acceleration.
        noise = 16 * jnp.finfo(f.dtype).eps * jnp.abs(f)
        t = jnp.where(f > f_prev + noise, 0.0, t)
        beta = t / (t + 3.0)
        known = jnp.isfinite(log_q12_prev) & jnp.isfinite(log_q12_new)
        step_size = log_q12_new - jnp.where(known, log_q12_prev, 0.0)
        log_r = jnp.where(known, log_q12_new + beta * step_size, log_q12_new)
        log_r = jnp.where(has_support, log_r, neg_inf)
        return log_r, a, b, log_q, log_q12_new, f, t + 1.0, violation_of(log_q), gap, k + 1

    def keep_going(carry):
        *_, violation, gap, k = carry
        # a gap below -tol is rounding that more iterations do not close: stop there
        # (``converged`` then says False, as the certificate failed)
        return (k < max_iters) & ((gap > tol) | (violation > tol))

    # Start from the conditionally independent q0 = p(x1|y) p(x2|y) p(y) ∈ Δ_p, which
    # is positive on every cell a member of Δ_p can use.
    a0 = jnp.where(valid_1, log_p1y - log_py_safe[None, :], neg_inf)
    log_r0 = jnp.where(has_support, 0.0, neg_inf).astype(p.dtype)
    inf = jnp.asarray(jnp.inf, p.dtype)
    init = (
        log_r0,
        a0,
        log_p2y,
        log_q_of(log_r0, a0, log_p2y),
        log_r0,
        inf,
        jnp.zeros((), p.dtype),
        inf,
        inf,
        jnp.zeros((), jnp.int32),
    )
    *_, log_q, _, f, _, violation, gap, k = jax.lax.while_loop(keep_going, step, init)
    return _Solution(log_q, f, gap, violation, k)


# Compiled here, unlike the rest of the library: the solver is a loop of thousands of
# steps, and eager callers (pid on a table, pid_from_samples) would otherwise pay for
# tracing and compiling it, and every small op around it, on each call. Under an
# outer jax.jit it is simply inlined.
@functools.partial(jax.jit, static_argnames=("max_iters", "sinkhorn_iters"))
def _decompose(p: jax.Array, tol: jax.Array, max_iters: int, sinkhorn_iters: int) -> PID:
    """The PID of a checked table ``p: [n1, n2, ny]`` (normalized here), see ``pid``."""
    p = p / jnp.sum(p)
    i1, i2, i12 = (i / LOG2 for i in mutual_informations(p))
    solution = _minimize_synergy_objective(p, tol, max_iters, sinkhorn_iters)
    lowest, highest = jnp.maximum(i1, i2), jnp.minimum(i12, i1 + i2)
    best = jnp.clip(solution.objective / LOG2, lowest, highest)
    zero = jnp.zeros((), p.dtype)
    return PID(
        redundancy=jnp.maximum(i1 + i2 - best, zero),
        unique_1=jnp.maximum(best - i2, zero),
        unique_2=jnp.maximum(best - i1, zero),
        synergy=jnp.maximum(i12 - best, zero),
        gap=solution.gap,
        violation=solution.violation,
        converged=_certified(solution, tol),
        iterations=solution.iterations,
        q=jnp.exp(solution.log_q),
    )


def pid(
    joint: jax.typing.ArrayLike,
    *,
    tol: float = 1e-6,
    max_iters: int = 3000,
    sinkhorn_iters: int = 3,
) -> PID:
    """The partial information decomposition of a discrete joint, in bits.

    Solves ``q* = argmin_{q ∈ Δ_p} I_q(X1, X2; Y)`` over the distributions Δ_p with
    the (x1, y) and (x2, y) marginals of p (Bertschinger et al., 2014) and returns
    ``R = I(X1;Y) + I(X2;Y) − I*``, ``U1 = I* − I(X2;Y)``, ``U2 = I* − I(X1;Y)``,
    ``S = I(X1,X2;Y) − I*`` with ``I* = I_q*(X1,X2;Y)``; see the module docstring for the
    method. The exact minimum lies in ``[max(I(X1;Y), I(X2;Y)), min(I(X1,X2;Y),
    I(X1;Y) + I(X2;Y))]``; the computed one is clipped to that interval and the terms at
    0, which removes negatives from rounding (of order the float epsilon times the
    entropies, or ``gap``) and keeps ``R + U1 + U2 + S = I(X1,X2;Y)``,
    ``R + U1 = I(X1;Y)`` and ``R + U2 = I(X2;Y)`` up to rounding.

    Zero cells are allowed: cells with ``p(x1, y) = 0`` or ``p(x2, y) = 0`` stay zero in
    every member of Δ_p, and labels with ``p(y) = 0`` drop out. Works under ``jax.jit``
    and ``jax.vmap`` (``max_iters`` and ``sinkhorn_iters`` static). float32
    computations certify ``gap`` down to about 1e-6 bits; for tighter ``tol`` enable
    ``jax_enable_x64`` and pass a float64 joint. Cost per iteration:
    ``O(sinkhorn_iters · n1 · n2 · ny)``.

    Args:
      joint: ``[n1, n2, ny]``, the probabilities ``p(x1, x2, y)``: non-negative,
        summing to 1 (to 1e-4; the table is then normalized exactly). Integer tables
        are taken as float32.
      tol: stop once ``gap`` (bits) and the marginal ``violation`` are both at most
        ``tol``; ``converged`` also needs ``gap >= -tol``.
      max_iters: the most iterations (each an accelerated and a certifying step).
      sinkhorn_iters: Sinkhorn sweeps per projection (warm-started, so a few suffice).

    Returns:
      A ``PID``: ``redundancy, unique_1, unique_2, synergy`` (bits), then the
      diagnostics ``gap, violation, converged, iterations`` and the minimizer ``q``.

    Raises:
      ValueError: ``joint`` not 3-D or with an empty axis; with concrete values (not
        under ``jax.jit``, where only the shape is checked and the table is normalized
        by its sum): non-finite or negative entries, or a sum that is not 1.
        Bad ``tol`` / ``max_iters`` / ``sinkhorn_iters``.

    Example:
      >>> p = jnp.zeros((2, 2, 2)).at[0, 0, 0].set(0.25).at[1, 1, 0].set(0.25)
      >>> p = p.at[0, 1, 1].set(0.25).at[1, 0, 1].set(0.25)  # y = x1 XOR x2
      >>> pid(p).synergy  # 1 bit, all of it synergy
      Array(1., dtype=float32)

    References:
      Bertschinger, Rauh, Olbrich, Jost and Ay, "Quantifying Unique Information",
      Entropy 2014.
      Liang et al., "Quantifying & Modeling Multimodal Interactions: An Information
      Decomposition Framework", NeurIPS 2023.
    """
    name = "pid"
    p = check_joint(joint, name)
    max_iters = check_positive_int(max_iters, "max_iters", name)
    sinkhorn_iters = check_positive_int(sinkhorn_iters, "sinkhorn_iters", name)
    tol = python_scalar(tol)  # np.float32(1e-6) and jnp scalars are numbers too
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not tol >= 0:
        raise ValueError(f"{name}: tol must be a number >= 0 (bits), got {tol!r}")
    return _decompose(p, jnp.asarray(tol, p.dtype), max_iters, sinkhorn_iters)
