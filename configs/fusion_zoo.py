r"""Every fusion operator, early and late fusion, on every synthetic task and two real ones.

Trainer: experiments/fusion_zoo.py. Command (full run; ``:quick`` for the smoke version):

    python -m experiments.main --config=configs/fusion_zoo.py --workdir=/tmp/mmfuse/fusion_zoo

Each model (an operator name: MLP encoder per modality -> operator -> MLP head;
``early``; ``late``; ``raw:<operator>``: the operator alone on the raw modalities) is
trained on each dataset (a catalogue name, or ``uci_mfeat:<view>+<view>`` for two of
its six views) with each seed. Rerunning the command skips finished runs and resumes an
interrupted one; the lists of datasets, models and seeds may change between reruns.

Variants (the argument after ``:``):
  (none) the full zoo: 10 datasets x 12 models x 3 seeds = 360 runs of 1,000 steps
    (batch 128). 24 min on 2 CPU cores shared with other jobs (load average ≈ 10):
    1-5 s per run, mostly tracing, checkpointing and, for the first run of each model
    and input shape, compiling (later runs hit ``workdir/xla_cache``). On one GPU (not
    measured) expect no faster: these models are tiny, so per-step dispatch and
    compilation dominate. Train-step times are wall-clock medians and vary with the
    machine's load.
  ``raw``: each operator in raw form as well (22 models, 660 runs); run on the same
    workdir after the full zoo, it trains only the 300 new runs (7 min here).
  ``quick``: synthetic/xor and synthetic/additive x (tensor, late, raw:additive) x 1
    seed, 200 steps; about 20 s on 2 CPU cores (the end-to-end test runs it).

Expected (test accuracy, mean over 3 seeds, from the full run):
  - synthetic/xor: every intermediate model and early fusion 1.000, the additive
    operator included (its MLP head computes the interaction of the two encoded
    bits); late fusion (a mean of unimodal logits) 0.51, chance; hard_gated 0.76 (it
    passes one modality's expert per example: only its gate sees both).
  - synthetic/synergy: late 0.49, hard_gated 0.68, every other model 0.90-0.92.
    synthetic/multiplicative and mix: late 0.84 / 0.86, hard_gated 0.80 / 0.83, the
    others 0.95-0.97.
  - synthetic/additive, redundancy, uniqueness: every model 0.97-0.98.
  - digits_halves 0.94 (hard_gated) to 0.98; uci_mfeat fou+kar 0.94-0.98; zer+mor
    (weak views) 0.83-0.86. Standard deviations over seeds: at most 0.03.
  - Raw form (the operator alone maps the raw modalities to the logits): on xor,
    raw:additive 0.50 and raw:hard_gated 0.76, every other operator ≥ 0.997; on
    synthetic/multiplicative (unimodal terms plus an interaction) raw:hard_gated 0.79,
    raw:multiplicative (no unimodal terms) 0.81, raw:additive 0.84, the others
    0.88-0.96.
"""

import ml_collections

from configs._sections import mesh_section, optim_section, train_section
from mmfuse import fusion

SYNTHETIC = (
    "synthetic/additive",
    "synthetic/multiplicative",
    "synthetic/xor",
    "synthetic/redundancy",
    "synthetic/uniqueness",
    "synthetic/synergy",
    "synthetic/mix",
)
# Two pairs of uci_mfeat's six views: two strong ones (Fourier and Karhunen-Loève
# coefficients) and two weak ones (Zernike moments and 6 morphological features).
REAL = ("digits_halves", "uci_mfeat:fou+kar", "uci_mfeat:zer+mor")

# Operator options that differ from the defaults. A pure bilinear form has no
# unimodal terms; modality_shift's default beta keeps the shift negligible.
FUSION_OPTIONS = {
    "bilinear": {"linear_terms": True},
    "modality_shift": {"beta": 1.0},
    "nonlinear": {"hidden_dims": (32,)},
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    variants = (None, "", "raw", "quick")
    if arg not in variants:
        raise ValueError(f"configs/fusion_zoo.py: unknown variant {arg!r}; variants: raw, quick")
    config = ml_collections.ConfigDict()
    config.trainer = "fusion_zoo"
    config.resume = True
    # Compiled programs kept in workdir/xla_cache: the train steps of one model are the
    # same program for every seed and for datasets of equal shapes, so most runs skip
    # compiling (a $JAX_COMPILATION_CACHE_DIR takes precedence).
    config.compilation_cache = True

    operators = fusion.names()
    config.datasets = SYNTHETIC + REAL
    config.models = (*operators, "early", "late")
    if arg == "raw":
        config.models = (*config.models, *(f"raw:{op}" for op in operators))
    config.seeds = (0, 1, 2)

    config.data = ml_collections.ConfigDict()
    config.data.data_dir = ml_collections.config_dict.placeholder(str)  # $TFDS_DATA_DIR
    config.data.standardize = True  # z-score each modality with train-split statistics

    config.model = ml_collections.ConfigDict()
    config.model.encoder_hidden = (32,)
    config.model.encoder_dim = 16
    config.model.fused_dim = 32
    config.model.head_hidden = (32,)
    config.model.late_combine = "mean"
    # unset: float32; "bfloat16": bf16 matmul operands, float32 accumulation and parameters
    config.model.compute_dtype = ml_collections.config_dict.placeholder(str)
    config.model.fusion_options = ml_collections.ConfigDict(FUSION_OPTIONS)

    config.optim = optim_section()
    config.train = train_section(1000, eval_every=200, checkpoint_every=500, log_every=50)
    config.mesh = mesh_section()

    if arg == "quick":
        config.datasets = ("synthetic/xor", "synthetic/additive")
        config.models = ("tensor", "late", "raw:additive")
        config.seeds = (0,)
        config.train.num_steps = 200
        config.train.eval_every = 50
        config.train.checkpoint_every = 100
        config.train.log_every = 25
    return config
