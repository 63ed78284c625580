"""Quantifying fusion: which cross-modal interactions a trained model actually uses.

- ``emap(fn, inputs)`` / ``emap_decompose``: the EMAP projection of a model onto
  additive functions of its M modalities (Hessel and Lee, EMNLP 2020), exact over all
  N^M cross pairs in one blocked pass, or Monte-Carlo with standard errors;
- ``emap_model``: the same for an mmfuse model, encoding each modality only once
  (and an early-fusion MLP's first layer too; ``kernel="pallas"`` fuses the pass over
  the pairs of a two-modality MLP head into one kernel);
- ``sharded_emap`` / ``sharded_emap_decompose`` / ``sharded_emap_model``: the same
  with the examples sharded by rows over the devices of a mesh, each device pairing
  its rows with all columns;
- ``emap_report``: accuracy / AUC / MSE of the model, its projection and its unimodal
  marginals; ``rank_interactions``: the examples that rely most on interactions;
- ``metrics``: the metrics themselves.
- ``pid(joint)``: the partial information decomposition (redundancy, uniqueness,
  synergy, in bits) of a discrete joint ``p(x1, x2, y)`` (Bertschinger et al., 2014);
  ``pid_from_samples(x1, x2, y)``: the same from paired samples, continuous modalities
  clustered first (Liang et al., NeurIPS 2023); a model's predictions as ``y`` give
  the model PID.

>>> import jax.numpy as jnp
>>> from mmfuse import interactions
>>> a, b = jnp.linspace(-1, 1, 8), jnp.linspace(0, 2, 8)
>>> interactions.emap(lambda xs: xs[0] * xs[1], (a, b))  # (a - ā)(b - b̄) removed
"""

from mmfuse.interactions import metrics
from mmfuse.interactions._emap import EmapDecomposition, emap, emap_decompose
from mmfuse.interactions._model import emap_model, model_fn, sharded_emap_model
from mmfuse.interactions._pid import PID, pid
from mmfuse.interactions._pid_samples import Discretized, pid_from_samples
from mmfuse.interactions._report import EmapReport, emap_report, rank_interactions
from mmfuse.interactions._sharded import sharded_emap, sharded_emap_decompose

__all__ = [
    "PID",
    "Discretized",
    "EmapDecomposition",
    "EmapReport",
    "emap",
    "emap_decompose",
    "emap_model",
    "emap_report",
    "metrics",
    "model_fn",
    "pid",
    "pid_from_samples",
    "rank_interactions",
    "sharded_emap",
    "sharded_emap_decompose",
    "sharded_emap_model",
]
