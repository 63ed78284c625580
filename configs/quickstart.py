r"""The quickstart behind ``scripts/demo.sh``: a handful of fusion models and the EMAP table.

Command (what ``scripts/demo.sh`` runs):

    python -m experiments.main --config=configs/quickstart.py --workdir=/tmp/mmfuse/quickstart

Trains, on ``synthetic/xor`` (a label that is a pure interaction of the two modalities)
and on ``digits_halves`` (real handwritten digits, top and bottom halves as modalities),
a linear model (additive fusion), a neural net on the concatenation (early fusion),
tensor fusion (a polynomial model), a neural net on the residual of the linear model,
and low-rank and gated intermediate fusion; then prints the lecture's EMAP table (test
accuracy of each model, the best one, and the best one's EMAP projection).
Runtime: about 2 minutes on 2 CPU cores (after the datasets are built), under a
minute on one GPU. Expected: xor is solved (≈ 1.0) by every model but the linear one
(≈ 0.5), and EMAP of the best xor model falls to ≈ 0.5; on digits_halves every model
is ≈ 0.9 or better, the linear model is a strong baseline, and EMAP of the best model
loses only a little.
"""

import ml_collections

from configs._sections import mesh_section, model_section, optim_section, train_section


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """``arg = "tiny"``: xor only, few steps (a smoke run of the whole pipeline)."""
    config = ml_collections.ConfigDict()
    config.trainer = "emap_table"
    config.resume = True
    config.seeds = (0,)
    config.data_dir = ml_collections.config_dict.placeholder(str)  # $TFDS_DATA_DIR
    config.datasets = [{"name": "synthetic/xor"}, {"name": "digits_halves"}]
    config.extra_models = [
        {"name": "low-rank fusion", "kind": "intermediate", "fusion": "low_rank_tensor"},
        {"name": "gated fusion", "kind": "intermediate", "fusion": "gated"},
    ]
    config.emap_max_examples = 1000
    config.model = model_section()
    config.optim = optim_section()
    config.train = train_section(num_steps=1200)
    config.mesh = mesh_section()
    if arg == "tiny":
        config.datasets = [{"name": "synthetic/xor"}]
        config.extra_models = config.extra_models[:1]
        config.emap_max_examples = 300
        config.train = train_section(num_steps=300)
    elif arg:
        raise ValueError(f"configs/quickstart.py: unknown variant {arg!r}; variants: tiny")
    return config
