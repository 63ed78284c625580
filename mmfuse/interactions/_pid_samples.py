"""PID from paired samples: discretize each modality, count, then decompose the joint.

Liang et al. (2023) estimate the PID of a dataset by clustering each continuous
modality (k-means on a PCA projection), counting the empirical joint of
(cluster of x1, cluster of x2, label) and solving the PID problem on it. With the true
labels this is the *dataset* PID; with a trained model's predicted classes in place of
the labels it is the *model* PID, and how closely the two agree tracks the model's
accuracy in their experiments.

References:
  Liang et al., "Quantifying & Modeling Multimodal Interactions: An Information
  Decomposition Framework", NeurIPS 2023.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np

from mmfuse.interactions._checks import check_positive_int
from mmfuse.interactions._pid import PID, pid


class Discretized(NamedTuple):
    """What ``pid_from_samples`` counted.

    Attributes:
      joint: ``[k1, k2, ky]`` float64, the empirical ``p(x1, x2, y)``.
      codes_1: ``[N]`` int64 in ``[0, k1)``, the discrete value (cluster) of each x1.
      codes_2: ``[N]`` int64 in ``[0, k2)``, likewise for x2.
      labels: ``[N]`` int64 in ``[0, ky)``, the label classes, renumbered in sorted order.
    """

    joint: np.ndarray
    codes_1: np.ndarray
    codes_2: np.ndarray
    labels: np.ndarray


def _as_numpy(x: Any, what: str, name: str) -> np.ndarray:
    array = np.asarray(x)
    if array.ndim not in (1, 2) or array.shape[0] == 0:
        raise ValueError(
            f"{name}: {what} must be an array [N] (discrete) or [N, d] (continuous) with "
            f"N >= 1, got shape {array.shape}"
        )
    if jnp.issubdtype(array.dtype, jnp.floating) and not np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.float32)  # bfloat16 and the other ml_dtypes floats
    real = np.issubdtype(array.dtype, np.number) and not np.iscomplexobj(array)
    if not (real or array.dtype == np.bool_):
        raise ValueError(f"{name}: {what} must hold real numbers, got dtype {array.dtype}")
    return array


def _is_discrete(x: np.ndarray) -> bool:
    return (x.ndim == 1 or x.shape[1] == 1) and (
        np.issubdtype(x.dtype, np.integer) or x.dtype == np.bool_
    )


def _discretize(
    x: np.ndarray, what: str, num_clusters: int, pca_dims: int | None, seed: int, name: str
) -> np.ndarray:
    """Codes ``[N]`` in ``[0, k)`` with every code used: discrete values or k-means clusters."""
    if _is_discrete(x):
        return np.unique(x.reshape(-1), return_inverse=True)[1].astype(np.int64)
    features = x.reshape(x.shape[0], -1).astype(np.float64)  # [N, d]
    if not np.all(np.isfinite(features)):
        raise ValueError(f"{name}: {what} has {np.sum(~np.isfinite(features))} non-finite values")
    distinct, inverse = np.unique(features, axis=0, return_inverse=True)
    if len(distinct) <= num_clusters:
        # No more points than clusters: each distinct point is its own cluster, which is
        # what k-means would find, without its warning about duplicate points.
        return inverse.reshape(-1).astype(np.int64)
    # scikit-learn is needed only here; importing mmfuse must not pull it in.
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA

    if pca_dims is not None and pca_dims < features.shape[1]:
        # PCA finds at most N components
        dims = min(pca_dims, features.shape[0])
        features = PCA(n_components=dims, random_state=seed).fit_transform(features)
    clusters = KMeans(n_clusters=num_clusters, n_init=4, random_state=seed).fit_predict(features)
    # Renumber so that clusters k-means left empty take no code (and no joint row).
    return np.unique(clusters, return_inverse=True)[1].astype(np.int64)


def _labels(y: np.ndarray, label_bins: int | None, name: str) -> np.ndarray:
    if y.ndim != 1:
        raise ValueError(f"{name}: y must be a label array [N], got shape {y.shape}")
    if np.issubdtype(y.dtype, np.integer) or y.dtype == np.bool_:
        if label_bins is not None:
            raise ValueError(f"{name}: label_bins is for continuous y, but y has dtype {y.dtype}")
        labels = np.unique(y, return_inverse=True)[1]
    else:
        if label_bins is None:
            raise ValueError(
                f"{name}: y has dtype {y.dtype}; pass integer class labels, or label_bins=k "
                "to cut continuous targets into k equal-frequency bins"
            )
        if not np.all(np.isfinite(y)):
            raise ValueError(f"{name}: y has {np.sum(~np.isfinite(y))} non-finite values")
        values, index, counts = np.unique(y, return_inverse=True, return_counts=True)
        index = index.reshape(-1)
        if len(values) <= label_bins:  # each distinct value is a class
            labels = index
        else:
            # cut between distinct values, as near the k-quantiles as ties allow: tied
            # samples share a bin, so a value held by over 1/k of them makes fewer bins
            below = np.cumsum(counts)[:-1] / y.size  # share at or below each cut
            targets = np.arange(1, label_bins) / label_bins
            cuts = np.unique(np.abs(below[None, :] - targets[:, None]).argmin(axis=1))
            labels = np.searchsorted(cuts, index, side="left")  # cuts below each value
    if labels.max() == 0:
        raise ValueError(
            f"{name}: y has a single class; there is no information about a constant label "
            "to decompose"
        )
    return labels.reshape(-1).astype(np.int64)


def pid_from_samples(
    x1: Any,
    x2: Any,
    y: Any,
    *,
    num_clusters: int = 20,
    pca_dims: int | None = 2,
    label_bins: int | None = None,
    seed: int = 0,
    return_discretized: bool = False,
    **pid_options: Any,
) -> PID | tuple[PID, Discretized]:
    """The PID of two modalities about a label, from N paired samples, in bits.

    Each modality is made discrete, the empirical joint ``p(x1, x2, y)`` of the codes
    and labels is counted, and ``pid`` decomposes it (Liang et al., 2023):

    - discrete modalities (integer or boolean ``[N]`` or ``[N, 1]``): their distinct
      values are the codes;
    - continuous modalities (float ``[N]`` or ``[N, d]``): projected onto their first
      ``pca_dims`` principal components (when d is larger; at most N), then clustered by k-means
      into ``num_clusters`` clusters; with at most ``num_clusters`` distinct points each
      point is its own cluster. Clusters left empty are dropped (codes are renumbered),
      so no empty row enters the joint.

    Labels are integer classes (their distinct values; at least two). Continuous
    targets need ``label_bins=k``: k bins of equal frequency, cut between distinct
    values of y at its k-quantiles. Tied values share a bin, so a target with at most
    k distinct values keeps them as its classes, and a value held by more than 1/k of
    the samples makes fewer bins.

    For a *model* PID, pass the model's predicted classes (e.g. ``argmax`` of its
    logits on the same examples) as ``y``; with the true labels it is the *dataset*
    PID. The estimate is biased upwards in synergy and redundancy when N is small next
    to the number of joint cells ``k1 · k2 · ky``, as any plug-in estimate.

    Args:
      x1: ``[N]`` or ``[N, d_1]``, the first modality.
      x2: ``[N]`` or ``[N, d_2]``, the second modality, paired with x1.
      y: ``[N]`` labels (integers), or continuous targets with ``label_bins``.
      num_clusters: k-means clusters per continuous modality.
      pca_dims: PCA dimensions before k-means; ``None`` clusters the raw features.
      label_bins: bins for continuous ``y``.
      seed: seeds PCA's and k-means' randomness.
      return_discretized: also return the counted ``Discretized`` joint and codes.
      **pid_options: passed to ``pid`` (``tol``, ``max_iters``, ``sinkhorn_iters``).

    Returns:
      The ``PID``, or ``(PID, Discretized)`` with ``return_discretized``.

    Raises:
      ValueError: inputs that are not ``[N]`` / ``[N, d]`` number arrays, sample counts
        that differ, non-finite continuous values, float labels without ``label_bins``
        (or ``label_bins`` with integer labels), a single label class, or bad options.

    Example:
      >>> a, b = rng.integers(0, 2, 1000), rng.integers(0, 2, 1000)
      >>> pid_from_samples(a, b, a ^ b).synergy  # about 1 bit
      >>> pid_from_samples(audio, video, model_predictions)  # a model PID

    References:
      Liang et al., "Quantifying & Modeling Multimodal Interactions: An Information
      Decomposition Framework", NeurIPS 2023.
    """
    name = "pid_from_samples"
    x1, x2, y = _as_numpy(x1, "x1", name), _as_numpy(x2, "x2", name), _as_numpy(y, "y", name)
    if not x1.shape[0] == x2.shape[0] == y.shape[0]:
        raise ValueError(
            f"{name}: x1, x2 and y must be paired samples, but their lengths differ "
            f"(x1: {x1.shape}, x2: {x2.shape}, y: {y.shape})"
        )
    num_clusters = check_positive_int(num_clusters, "num_clusters", name)
    if pca_dims is not None:
        pca_dims = check_positive_int(pca_dims, "pca_dims", name)
    if label_bins is not None:
        label_bins = check_positive_int(label_bins, "label_bins", name, minimum=2)
    seed = check_positive_int(seed, "seed", name, minimum=0)
    labels = _labels(y, label_bins, name)
    codes_1 = _discretize(x1, "x1", num_clusters, pca_dims, seed, name)
    codes_2 = _discretize(x2, "x2", num_clusters, pca_dims, seed, name)
    counts = np.zeros((codes_1.max() + 1, codes_2.max() + 1, labels.max() + 1))
    np.add.at(counts, (codes_1, codes_2, labels), 1.0)
    joint = counts / counts.sum()  # [k1, k2, ky]
    # Zero rows leave the PID unchanged; padding every axis to a multiple of 8 lets
    # tables of similar sizes share one compiled solver.
    padded = np.pad(joint, [(0, -n % 8) for n in joint.shape])
    result = pid(padded, **pid_options)
    k1, k2, ky = joint.shape
    result = result._replace(q=result.q[:k1, :k2, :ky])  # q* of `joint`, without the padding
    if return_discretized:
        return result, Discretized(joint, codes_1, codes_2, labels)
    return result
