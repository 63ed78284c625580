"""Least squares with standard errors, and a fusion operator's weights read as coefficients.

The lecture's linear fusion case fits ``y = w0 + w1 x_A + w2 x_B + w3 x_A x_B`` (or a
prefix of it) by ordinary least squares, and by the ``additive`` and ``tensor``
operators on 1-D inputs; these are the pieces that compare the two.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

# --------------------------------------------------------------------------- least squares


def design(x_a: np.ndarray, x_b: np.ndarray, num_terms: int) -> np.ndarray:
    """The design matrix ``[n, p]`` of columns ``1, x_A, x_B, x_A·x_B`` (the first p).

    Args:
      x_a: ``[n]``.
      x_b: ``[n]``.
      num_terms: p, 1 to 4.
    """
    x_a, x_b = np.asarray(x_a, np.float64), np.asarray(x_b, np.float64)
    columns = (np.ones_like(x_a), x_a, x_b, x_a * x_b)
    return np.stack(columns[:num_terms], axis=1)  # [n, p]


def r_squared(x: np.ndarray, y: np.ndarray, coef: np.ndarray) -> float:
    """``1 − RSS / TSS`` of the linear predictor ``x @ coef`` (``x [n, p]``, ``y [n]``)."""
    y = np.asarray(y, np.float64)
    residual = y - x @ coef
    return float(1.0 - residual @ residual / np.sum(np.square(y - y.mean())))


def ols(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares coefficients and their standard errors, in float64.

    ``SE_j = sqrt(σ² [(XᵀX)⁻¹]_jj)`` with ``σ² = RSS / (n − p)``, the usual
    homoscedastic estimate.

    Args:
      x: the design matrix ``[n, p]``, n > p, of full column rank.
      y: ``[n]``.

    Returns:
      ``(coef [p], se [p])``.
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    n, p = x.shape
    if n <= p:
        raise ValueError(f"ols needs more examples than coefficients, got n={n}, p={p}")
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    residual = y - x @ coef
    sigma2 = residual @ residual / (n - p)
    se = np.sqrt(sigma2 * np.diag(np.linalg.inv(x.T @ x)))
    return coef, se


# --------------------------------------------------------------------------- operators


@dataclasses.dataclass(frozen=True)
class Scaling:
    """The affine maps the operators' inputs and target went through: ``u = (x − mean) / std``.

    Attributes:
      mean: ``(mean of x_A, mean of x_B)``.
      std: ``(std of x_A, std of x_B)``.
      y_mean: the target's mean.
      y_std: the target's std.
    """

    mean: tuple[float, float] = (0.0, 0.0)
    std: tuple[float, float] = (1.0, 1.0)
    y_mean: float = 0.0
    y_std: float = 1.0

    @classmethod
    def fit(cls, x_a: np.ndarray, x_b: np.ndarray, y: np.ndarray) -> Scaling:
        def moments(v):
            v = np.asarray(v, np.float64)
            return float(v.mean()), float(v.std()) or 1.0

        (ma, sa), (mb, sb), (my, sy) = moments(x_a), moments(x_b), moments(y)
        return cls((ma, mb), (sa, sb), my, sy)


def operator_coefficients(name: str, params: Mapping[str, Any], *, append: str = "last"):
    """The regression coefficients an operator with 1-D inputs and one output computes.

    - ``additive`` on M = 1 or 2 modalities (``z = Σ_m W_m x_m + b``, ``W_m [1, 1]``,
      ``b [1]``): ``(b, W_1[, W_2])``.
    - ``tensor`` on 2 modalities (``z = Σ_ij K[i, j] [x_A; 1]_i [x_B; 1]_j``,
      ``K [2, 2, 1]``): ``w0 = K[1, 1]``, ``w1 = K[0, 1]``, ``w2 = K[1, 0]``,
      ``w3 = K[0, 0]`` for ``append="last"`` (the indices of ``x`` and ``1`` swap for
      ``append="first"``, i.e. ``[1; x]``).

    Args:
      name: ``"additive"`` or ``"tensor"``.
      params: the operator's functional parameters (``op.functional_params()``).
      append: the tensor operator's ``append_one`` position.

    Returns:
      ``[p]`` float64: ``(w0, w1[, w2[, w3]])`` in the operator's input coordinates.
    """
    if name == "additive":
        kernels = [np.asarray(k, np.float64) for k in params["kernels"]]
        if any(k.shape != (1, 1) for k in kernels) or np.shape(params["bias"]) != (1,):
            raise ValueError(f"additive: expected 1-D inputs and one output, got {kernels}")
        return np.array([float(params["bias"][0]), *(float(k[0, 0]) for k in kernels)])
    if name == "tensor":
        kernel = np.asarray(params["kernel"], np.float64)
        if kernel.shape != (2, 2, 1):
            raise ValueError(f"tensor: expected a [2, 2, 1] kernel, got {kernel.shape}")
        x, one = (0, 1) if append == "last" else (1, 0)
        k = kernel[..., 0]
        return np.array([k[one, one], k[x, one], k[one, x], k[x, x]])
    raise ValueError(f"no coefficient mapping for operator {name!r}")


def to_original_scale(coef: Sequence[float], scaling: Scaling) -> np.ndarray:
    """Coefficients fitted on ``u_A, u_B, (y − y_mean) / y_std`` as ``(w0, ...)`` on ``x, y``.

    Substituting ``u_m = (x_m − μ_m) / s_m`` into ``c0 + c1 u_A + c2 u_B + c3 u_A u_B`` and
    multiplying by ``y_std`` gives the same function of the original inputs.

    Args:
      coef: ``[p]``, p = 2, 3 or 4: ``(c0, c1[, c2[, c3]])``.
      scaling: the maps the fit went through.

    Returns:
      ``[p]`` float64.
    """
    p = len(coef)
    c0, c1, c2, c3 = (*(float(c) for c in coef), 0.0, 0.0, 0.0)[:4]
    (ma, mb), (sa, sb) = scaling.mean, scaling.std
    w3 = c3 / (sa * sb)
    w1 = c1 / sa - w3 * mb
    w2 = c2 / sb - w3 * ma
    w0 = c0 - c1 * ma / sa - c2 * mb / sb + w3 * ma * mb
    w = np.array([w0, w1, w2, w3]) * scaling.y_std
    w[0] += scaling.y_mean
    return w[:p]
