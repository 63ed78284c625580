r"""The lecture's linear fusion case on ``book_reviews`` (experiments/linear_case.py).

Command (``:quick`` runs 3 dataset seeds and 400 steps instead of 10 and 2,000):

    python -m experiments.main --config=configs/linear_case.py --workdir=/tmp/mmfuse/linear_case

Runtime: about 45 s on 2 CPU cores (30 fits of 2,000 full-batch steps, each dominated by
its one compilation; building the ten datasets on first use adds about 10 s); ``:quick``
about 15 s. One GPU: not measured; the work is compilation and checkpoint writes, not
arithmetic, so expect no speed-up over the CPU.
Expected: the three regressions, averaged over ten generated datasets of 300 reviews
(dataset seeds 0–9), reproduce the lecture's estimates within their standard errors,
and the fusion operators (``additive`` on x_A, ``additive`` on x_A and x_B, ``tensor`` on
x_A and x_B, one output each) land on the OLS coefficients to ±0.01:

    | model | fit | w0 | w1 | w2 | w3 | R² |
    |---|---|---|---|---|---|---|
    | y ~ x_A | lecture | 4.63 | 1.20 | – | – |  |
    |  | OLS ± SE | 4.57 ± 0.15 | 1.24 ± 0.15 | – | – | 0.191 |
    |  | additive | 4.57 | 1.24 | – | – | 0.191 |
    | y ~ x_A + x_B | lecture | 5.29 | 1.19 | −1.69 | – |  |
    |  | OLS ± SE | 5.28 ± 0.09 | 1.18 ± 0.08 | −1.67 ± 0.07 | – | 0.741 |
    |  | additive | 5.28 | 1.18 | −1.67 | – | 0.741 |
    | y ~ x_A + x_B + x_A*x_B | lecture | 5.79 | 0.68 | −2.94 | 1.29 |  |
    |  | OLS ± SE | 5.76 ± 0.10 | 0.69 ± 0.09 | −3.00 ± 0.16 | 1.39 ± 0.16 | 0.796 |
    |  | tensor | 5.76 | 0.69 | −3.00 | 1.39 | 0.796 |

(SE: the mean per-dataset standard error; the operators' coefficients differ from OLS by
less than 1e-6 on every dataset.) Outputs: ``results.json``, ``table.md``,
``plots/linear_case.png`` (score vs smiling per group with the fitted lines),
``plots/table.png`` and ``runs/seed_<s>/<model>/{checkpoints,metrics.jsonl}``.

Overrides: ``--config.data.seeds='(0,)'`` for one dataset, ``--config.optim.num_steps=500``,
``--config.data.options.n=100`` / ``noise=...`` for the generator's options,
``--config.model.standardize=False`` to train on the raw inputs (an ill-conditioned problem
for the optimizer: 2,000 steps then leave the tensor fit's weights up to 0.7 from OLS);
``--config.resume=False`` discards a previous run in the workdir.
"""

import ml_collections

from mmfuse import data


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    if arg not in (None, "", "quick"):
        raise ValueError(f"configs/linear_case.py: unknown variant {arg!r}; variants: quick")
    quick = arg == "quick"
    config = ml_collections.ConfigDict()
    config.trainer = "linear_case"
    config.seed = 0  # the operators' initialization
    config.resume = True

    config.data = ml_collections.ConfigDict()
    config.data.name = "book_reviews"
    # every option of the generator but its seed (that goes in seeds), with its default
    options = {k: v for k, v in data.options("book_reviews").items() if k != "seed"}
    config.data.options = ml_collections.ConfigDict(options)
    config.data.data_dir = ml_collections.config_dict.placeholder(str)  # $TFDS_DATA_DIR
    config.data.seeds = (0, 1, 2) if quick else tuple(range(10))  # one dataset per seed
    config.data.modalities = ("smiling", "critic")  # x_A, x_B

    config.model = ml_collections.ConfigDict()
    config.model.standardize = True  # the operators see standardized inputs and target
    config.model.tensor_append = "last"  # [x; 1] as in TFN, or "first"

    config.optim = ml_collections.ConfigDict()
    config.optim.name = "adam"
    config.optim.learning_rate = 0.05
    config.optim.schedule = "cosine"
    config.optim.clip_norm = 0.0  # 0: no clipping
    config.optim.num_steps = 400 if quick else 2000  # full-batch steps

    config.train = ml_collections.ConfigDict()
    config.train.log_every = 50 if quick else 100
    config.train.checkpoint_every = 200 if quick else 500
    return config
