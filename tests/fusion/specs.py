"""How the operator-wide contract tests build and call each registered operator.

Each entry: ``in_dims`` (three modalities wherever the operator allows them),
``options`` passed to ``fusion.create`` and ``train_kwargs``, a function of a PRNG key
returning the keyword arguments of a training-mode call (for operators whose
parameters only receive gradients in training mode, e.g. hard gates).
"""

SPECS = {
    "additive": dict(in_dims=(3, 4, 5), options={}),
    "tensor": dict(in_dims=(3, 4, 2), options={}),
}
