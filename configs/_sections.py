"""Config sections shared by the experiment configs (``model``, ``optim``, ``train``)."""

import ml_collections

from mmfuse import fusion

# options a command line cannot set, or that have a key of their own (model.compute_dtype)
_NOT_FUSION_OPTIONS = ("kernel_init", "compute_dtype")


def model_section() -> ml_collections.ConfigDict:
    """Widths of the per-modality encoders, the fused representation and the head, and
    ``compute_dtype``: unset for float32, ``"bfloat16"`` for bf16 matmul operands with
    float32 accumulation and parameters (mixed precision)."""
    model = ml_collections.ConfigDict()
    model.encoder_hidden = (32,)
    model.encoder_dim = 16
    model.fused_dim = 32
    model.head_hidden = (32,)
    model.compute_dtype = ml_collections.config_dict.placeholder(str)
    return model


def fusion_options_section(name: str) -> ml_collections.ConfigDict:
    """Every option of fusion operator ``name``, unset (``None``: the operator's default,
    ``mmfuse.fusion.options(name)``), each typed so that ``--config...<option>=value``
    can set it; ``_models.fusion_options`` passes on the ones that are set."""
    section = ml_collections.ConfigDict()
    for key, default in fusion.options(name).items():
        if key not in _NOT_FUSION_OPTIONS:
            kind = object if default is None else type(default)  # object: any literal
            section[key] = ml_collections.config_dict.placeholder(kind)
    return section


def optim_section(learning_rate: float = 3e-3) -> ml_collections.ConfigDict:
    """Adam with a cosine schedule and gradient clipping (``_training.build_optimizer``)."""
    optim = ml_collections.ConfigDict()
    optim.name = "adam"  # adam | adamw | sgd
    optim.learning_rate = learning_rate
    optim.schedule = "cosine"  # constant | cosine | warmup_cosine
    optim.warmup_steps = 0
    optim.weight_decay = 0.0
    optim.clip_norm = 1.0  # 0: no clipping
    return optim


def train_section(
    num_steps: int,
    *,
    batch_size: int = 128,
    eval_every: int | None = None,
    checkpoint_every: int | None = None,
    log_every: int | None = None,
) -> ml_collections.ConfigDict:
    """Steps, batch size and intervals (default: 6 evaluations and checkpoints, 30 logs)."""
    section = ml_collections.ConfigDict()
    section.num_steps = num_steps
    section.batch_size = batch_size
    section.eval_every = eval_every or max(num_steps // 6, 1)
    section.checkpoint_every = checkpoint_every or max(num_steps // 6, 1)
    section.log_every = log_every or max(num_steps // 30, 1)
    section.patience = ml_collections.config_dict.placeholder(int)  # evaluations; None: never
    return section


def mesh_section() -> ml_collections.ConfigDict:
    """The device mesh to train on: e.g. ``shape=(8,)`` for data parallelism over 8
    devices, or ``shape=(2, 4)``, ``axes=("data", "model")``, ``param_axis="model"`` to also
    split the parameters. Batches are split over the first axis other than
    ``param_axis``. An empty shape trains on the default device."""
    mesh = ml_collections.ConfigDict()
    mesh.shape = ()
    mesh.axes = ("data",)
    mesh.param_axis = ml_collections.config_dict.placeholder(str)
    return mesh
