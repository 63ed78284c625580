"""Property-based tests (hypothesis) of the public API on random and hostile input.

Guarantees checked, for every registered fusion operator (M from its smallest to its
largest allowed count, up to 4), the modular models (``FusionModel`` with any operator,
``LateFusion``, ``MLP``), every model kind of the test zoo, and ``interactions.emap`` /
``emap_decompose``:

- Shapes: inputs ``[B, d_m]`` or ``[B, T, d_m]`` give ``[B, C]`` or ``[B, T, C]``; an empty
  batch (B = 0) gives ``[0, C]`` (``[0, T, C]``), never an error or a wrong shape.
- Dtype policy: integer and boolean inputs are cast to float32; float16 and bfloat16
  inputs are computed (and returned) in float32, the parameters' dtype; float64 inputs
  (under ``jax.enable_x64``) give float64. Mixed inputs give float64 if any input is
  float64, else float32. Complex, string and object inputs raise ``TypeError`` naming
  the modality. EMAP passes inputs to ``fn`` unchanged and returns float32 (float64 for
  float64 outputs of ``fn``).
- Finiteness: finite inputs of moderate magnitude (|x| ≤ 100) give finite outputs.
- NaN / inf: a non-finite input entry can only make its own example's output
  non-finite; every other example stays finite. EMAP, which averages each example
  with all the others, raises ``ValueError`` (with the count of affected pairs)
  instead of spreading a NaN, in exact and Monte-Carlo mode.
- Bad input: a wrong number of modalities, a wrong feature size, leading (batch/time)
  dims that disagree, a scalar input, and an unsupported modality count at
  construction raise ``ValueError`` naming the modality and the shapes; so do EMAP's
  unpaired inputs, N < 2, a single modality, ``fn`` outputs that are not one row per
  example, and complex ``fn`` outputs.
- EMAP maths: additive models are fixed points; ``projected`` equals
  ``Σ_m marginals[m] − (M − 1)·grand_mean``; Monte-Carlo counts beyond int32 work.

The hypothesis profile ("ci": few derandomized examples, no deadline) is set in
``conftest.py``; ``HYPOTHESIS_PROFILE=thorough`` searches further.
"""
