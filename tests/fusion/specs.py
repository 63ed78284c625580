"""How the operator-wide contract tests build and call each registered operator.

Each entry: ``in_dims`` (three modalities wherever the operator allows them),
``options`` passed to ``fusion.create`` and ``train_kwargs``, a function of a PRNG key
returning the keyword arguments of a training-mode call (for operators whose
parameters only receive gradients in training mode, e.g. hard gates).
"""

SPECS = {
    "additive": dict(in_dims=(3, 4, 5), options={}),
    "tensor": dict(in_dims=(3, 4, 2), options={}),
    "multiplicative": dict(in_dims=(3, 4, 5), options={"hidden_dim": 6}),
    "bilinear": dict(in_dims=(3, 4), options={"linear_terms": True}),
    "low_rank_tensor": dict(in_dims=(3, 4, 5), options={"rank": 3}),
    # d_0 = 4 != out_dim so that the final linear layer is built (and trained);
    # beta = 1 lets the displacement, hence every gate and shift weight, matter.
    "modality_shift": dict(in_dims=(4, 3, 5), options={"beta": 1.0}),
    "film": dict(in_dims=(4, 3, 5), options={}),
    "nonlinear": dict(in_dims=(3, 4, 5), options={"hidden_dims": (6, 5)}),
    "gated": dict(in_dims=(3, 4, 5), options={}),
    # Trains through the straight-through Gumbel estimator, so the gate gets gradients.
    "hard_gated": dict(in_dims=(3, 4, 5), options={}, train_kwargs=lambda key: {"key": key}),
}
