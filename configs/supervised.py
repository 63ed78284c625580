r"""One fusion model trained on one dataset, with its EMAP (experiments/supervised.py).

Command (the argument after ``:`` is the fusion operator, default ``tensor``, optionally
followed by ``,<dataset>``, default ``synthetic/xor``):

    python -m experiments.main --config=configs/supervised.py:low_rank_tensor,synthetic/xor \
        --workdir=/tmp/mmfuse/supervised --config.data.options.noise=0.3

Runtime: about 20 s on 2 CPU cores (2,000 steps of batch 128), a few seconds on one GPU.
Expected on ``synthetic/xor`` (default): test accuracy ≈ 1.0 and an EMAP projection near
chance (≈ 0.5), since the label is a pure interaction of the two modalities; on
``synthetic/additive`` the projection keeps the model's accuracy.
Overrides: any key below, e.g. ``--config.model.kind=late``, ``--config.train.num_steps=500``,
every option of the chosen dataset under ``config.data.options`` (unset: the dataset's
default, ``mmfuse.data.options``) and of the chosen operator under ``config.model.fusion_options``
(e.g. ``--config.model.fusion_options.estimator=reinforce`` for ``:hard_gated``);
``--config.data.standardize=True`` z-scores the inputs (the default for ``uci_mfeat``);
``--config.emap.num_samples=K`` asks for Monte-Carlo EMAP;
``--config.model.encoders.mode=frozen`` (or ``finetune``) first trains each modality's
encoder alone, then the fusion on top of the frozen (fine-tuned) encoders, and reports
the unimodal baselines too (``--config.model.encoders.init_from=<workdir>`` reads the
encoders from another finished run instead); ``--config.resume=False`` discards a
previous run in the workdir.
"""

import ml_collections

from configs._sections import fusion_options_section, mesh_section, optim_section, train_section
from mmfuse import data


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    fusion_name, _, dataset = (arg or "").partition(",")
    config = ml_collections.ConfigDict()
    config.trainer = "supervised"
    config.seed = 0
    config.resume = True

    config.data = ml_collections.ConfigDict()
    config.data.name = dataset or "synthetic/xor"
    # Every option of the dataset, unset (None: the dataset's default, listed by
    # mmfuse.data.options and in results.json's data_options), so that each can be set,
    # also after --config.data.name=<another dataset> (which keeps that dataset's
    # defaults). Typed as any literal: some options take several forms (uniqueness: one
    # weight or one per modality); the dataset checks the values and names a bad one.
    config.data.options = ml_collections.ConfigDict(
        {
            key: ml_collections.config_dict.FieldReference(None, field_type=object)
            for key in data.options(config.data.name)
        }
    )
    config.data.data_dir = ml_collections.config_dict.placeholder(str)  # $TFDS_DATA_DIR
    config.data.modalities = ()  # a subset of the stored modalities; () keeps all
    # z-score each modality per feature with train-split statistics; unset: on for the
    # datasets whose views come in very different units (uci_mfeat: < 1 to 10^4)
    config.data.standardize = ml_collections.config_dict.placeholder(bool)

    config.model = ml_collections.ConfigDict()
    config.model.kind = "intermediate"  # intermediate | early | late | raw
    config.model.fusion = fusion_name or "tensor"
    # every option of the operator, unset (its default); set one with e.g.
    # --config.model.fusion_options.rank=8 (options of the operator named after ":")
    config.model.fusion_options = fusion_options_section(config.model.fusion)
    config.model.encoder_hidden = (32,)
    config.model.encoder_dim = 16
    config.model.fused_dim = 32
    config.model.head_hidden = (32,)
    config.model.late_combine = "mean"
    # unset: float32; "bfloat16": bf16 matmul operands, float32 accumulation and parameters
    config.model.compute_dtype = ml_collections.config_dict.placeholder(str)
    # The per-modality branches (intermediate: encoders; late: predictors) are learned
    # with the fusion from scratch ("joint"), or pre-trained and then "frozen" or
    # fine-tuned ("finetune", at lr_scale times the learning rate; unset: 1). Pre-trained
    # here: each alone on the task for pretrain_steps (unset: train.num_steps); or read,
    # by modality name, from init_from: the workdir of a finished supervised run with
    # the same model.kind and branch widths (e.g. one trained on another dataset).
    config.model.encoders = ml_collections.ConfigDict()
    config.model.encoders.mode = "joint"  # joint | frozen | finetune
    config.model.encoders.pretrain_steps = ml_collections.config_dict.placeholder(int)
    config.model.encoders.lr_scale = ml_collections.config_dict.placeholder(float)
    config.model.encoders.init_from = ml_collections.config_dict.placeholder(str)

    config.optim = optim_section()
    config.train = train_section(2000, eval_every=250, checkpoint_every=250, log_every=50)

    config.mesh = mesh_section()

    config.emap = ml_collections.ConfigDict()
    config.emap.enabled = True
    config.emap.max_examples = 1000
    # unset: exact EMAP where the test examples' N^M cross pairs number at most 10^9,
    # else Monte-Carlo with 512 sampled partners (uci_mfeat's six views); an int asks
    # for Monte-Carlo mode with that many partners
    config.emap.num_samples = ml_collections.config_dict.placeholder(int)
    return config
