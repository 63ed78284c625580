"""Whole models: per-modality encoders, a fusion stage and a head.

- encoders: ``MLP`` for vectors ``[..., d]``, ``SequenceEncoder`` (GRU) for ``[B, T, d]``;
- modular models that factorize as ``head(enc_1(x_1), ..., enc_M(x_M))``: ``FusionModel``
  (early / intermediate / late fusion around any ``mmfuse.fusion`` operator) and
  ``LateFusion`` (mean or learned weights over unimodal predictions);
- transformers over raw modality tokens: ``EarlyFusionTransformer`` and
  ``BottleneckFusion`` (attention bottlenecks);
- ``ResidualFusion``: a sum of unimodal, bimodal (and trimodal) MLP branches, trained
  with ``residual_loss`` so that interactions fit only what simpler branches leave over
  (multimodal residual optimization); ``interaction_share`` measures how much they do;
- ``as_pure(model)``: ``params`` and pure ``apply`` (and ``encode`` / ``head``) functions.

>>> from flax import nnx
>>> from mmfuse import fusion, models
>>> rngs = nnx.Rngs(0)
>>> model = models.FusionModel(
...     [models.MLP(8, (16,), 4, rngs=rngs), models.MLP(5, (16,), 4, rngs=rngs)],
...     fusion.create("tensor", (4, 4), 8, rngs=rngs),
...     models.MLP(8, (), 2, rngs=rngs),
... )
"""

from mmfuse.models.encoders import MLP, SequenceEncoder
from mmfuse.models.modular import FusionModel, LateFusion
from mmfuse.models.pure import PureModel, as_pure
from mmfuse.models.residual import ResidualFusion, interaction_share, residual_loss
from mmfuse.models.transformers import BottleneckFusion, EarlyFusionTransformer

__all__ = [
    "MLP",
    "BottleneckFusion",
    "EarlyFusionTransformer",
    "FusionModel",
    "LateFusion",
    "PureModel",
    "ResidualFusion",
    "SequenceEncoder",
    "as_pure",
    "interaction_share",
    "residual_loss",
]
