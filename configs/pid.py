r"""PID of the synthetic datasets and of the fusion-zoo models (experiments/pid.py).

Command (``--config.zoo_workdir`` reuses the models of a fusion-zoo run trained with the
same ``model``, ``optim``, ``train`` and ``data`` settings, which is checked; models it
lacks, or all of them without it, are trained here first, with the fusion zoo's settings):

    python -m experiments.main --config=configs/pid.py --workdir=/tmp/mmfuse/pid \
        --config.zoo_workdir=/tmp/mmfuse/fusion_zoo

Runtime on 2 CPU cores: about 5 minutes with a zoo workdir (7 dataset PIDs and 84 model
PIDs: k-means on 8,000 training examples, then the PID solve), 15 more without; similar
on one GPU (the work is clustering and small solves).
Expected: the dominant dataset-PID term is synergy on ``xor`` and ``synergy``, unique_1
on ``uniqueness``, redundancy on ``redundancy`` (clustering both continuous views also
makes some synergy appear everywhere); models that cannot express interactions
(late fusion, hard gates) have model PIDs with little synergy on xor/synergy, low
agreement and low accuracy, so agreement and accuracy correlate positively.
``get_config("tiny")``: xor and uniqueness, three models, few steps (a smoke run).
"""

import ml_collections

from configs import fusion_zoo

SYNTHETIC = tuple(d for d in fusion_zoo.SYNTHETIC)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = fusion_zoo.get_config("quick" if arg == "tiny" else None)
    config.trainer = "pid"
    config.zoo_workdir = ml_collections.config_dict.placeholder(str)
    config.datasets = list(SYNTHETIC)
    config.seeds = (0,)  # the model PID of seed 0's model
    config.pid = ml_collections.ConfigDict()
    config.pid.split = "train"  # more examples: less plug-in bias in the empirical joint
    config.pid.num_clusters = 20
    config.pid.pca_dims = ml_collections.config_dict.placeholder(int)  # None: cluster raw
    config.pid.seed = 0
    if arg == "tiny":
        config.datasets = ["synthetic/xor", "synthetic/uniqueness"]
        config.models = ["tensor", "late", "raw:additive"]
    elif arg:
        raise ValueError(f"configs/pid.py: unknown variant {arg!r}; variants: tiny")
    return config
