"""The lecture's linear fusion case: three regressions of a book review's score.

``y`` is the audience score, ``x_A`` the reviewer's smiling and ``x_B`` whether the
reviewer is a critic (``book_reviews``). The lecture fits

- ``y ~ x_A``:                   ``y = w0 + w1 x_A``
- ``y ~ x_A + x_B``:             ``y = w0 + w1 x_A + w2 x_B``
- ``y ~ x_A + x_B + x_A*x_B``:   ``y = w0 + w1 x_A + w2 x_B + w3 x_A x_B``

Each is fitted twice: by ordinary least squares with standard errors
(``SE = sqrt(diag(σ² (XᵀX)⁻¹))``, ``σ² = RSS / (n − p)``), and by a ``mmfuse`` fusion
operator with one output, trained with ``mmfuse.train.fit`` (full batch): ``additive``
on ``x_A`` alone, ``additive`` on ``(x_A, x_B)``, and ``tensor`` on ``(x_A, x_B)``. With
1-D inputs, ``tensor`` computes ``z = W vec([x_A; 1] ⊗ [x_B; 1])``, which *is* the
full regression: its four weights are ``w3, w1, w2, w0``. The operators' parameters are
read back as ``(w0, w1, w2, w3)``; when ``model.standardize`` is set the operators see
standardized inputs and target, and their weights are mapped back to the original
scale.

``train_and_evaluate(config, workdir)`` writes ``config.json``, ``runs/seed_<s>/<model>/``
(``checkpoints/`` and ``metrics.jsonl`` of each operator fit), ``results.json``,
``table.md`` (also printed) and ``plots/{linear_case,table}.png``. With several dataset
seeds in ``config.data.seeds`` every fit is repeated on each generated dataset and the
coefficients are averaged. A rerun on the same workdir resumes the unfinished fits.

References:
  P. Liang, Multimodal AI, Lecture 4.1 "Multimodal Fusion" (the linear fusion case).
  Zadeh et al., "Tensor Fusion Network for Multimodal Sentiment Analysis", EMNLP 2017.
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from experiments import _config, _models, _plots, _training
from experiments._regression import (
    Scaling,
    design,
    ols,
    operator_coefficients,
    r_squared,
    to_original_scale,
)
from mmfuse import data, fusion, train

TERMS = ("w0", "w1", "w2", "w3")  # intercept, x_A, x_B, x_A·x_B


@dataclasses.dataclass(frozen=True)
class Spec:
    """One of the three regressions and the fusion operator that fits it.

    Attributes:
      name: the regression, as the lecture writes it.
      slug: its folder name under ``runs/seed_<s>/``.
      operator: the registered fusion operator.
      num_modalities: 1 (``x_A``) or 2 (``x_A, x_B``).
      num_terms: p, the number of coefficients (a prefix of ``TERMS``).
    """

    name: str
    slug: str
    operator: str
    num_modalities: int
    num_terms: int


SPECS = (
    Spec("y ~ x_A", "additive_a", "additive", 1, 2),
    Spec("y ~ x_A + x_B", "additive_ab", "additive", 2, 3),
    Spec("y ~ x_A + x_B + x_A*x_B", "tensor_ab", "tensor", 2, 4),
)

# The lecture's estimates (300 book reviews).
PUBLISHED = {
    "y ~ x_A": (4.63, 1.20),
    "y ~ x_A + x_B": (5.29, 1.19, -1.69),
    "y ~ x_A + x_B + x_A*x_B": (5.79, 0.68, -2.94, 1.29),
}


def fit_operator(
    spec: Spec,
    x_a: np.ndarray,
    x_b: np.ndarray,
    y: np.ndarray,
    *,
    optimizer,
    num_steps: int,
    seed: int,
    workdir: pathlib.Path | None,
    standardize: bool = True,
    append: str = "last",
    log_every: int = 100,
    checkpoint_every: int | None = None,
) -> tuple[np.ndarray, float]:
    """Trains ``spec.operator`` on the reviews (full batch, MSE); returns ``(w [p], loss)``.

    Args:
      spec: which regression.
      x_a: ``[n]``; x_b: ``[n]``; y: ``[n]``.
      optimizer: an optax transformation.
      num_steps: train steps (each on all n examples).
      seed: initialization and step-key seed.
      workdir: the fit's folder (``checkpoints/``, ``metrics.jsonl``) or ``None``.
      standardize: train on standardized inputs and target (coefficients are mapped back).
      append: the tensor operator's ``append_one``.

    Returns:
      the coefficients on the original scale, and the final training loss (on the
      scale the operator was trained on).
    """
    scaling = Scaling.fit(x_a, x_b, y) if standardize else Scaling()
    (ma, mb), (sa, sb) = scaling.mean, scaling.std
    columns = [(x_a - ma) / sa, (x_b - mb) / sb][: spec.num_modalities]
    train_data = {f"x{m}": np.asarray(c, np.float32)[:, None] for m, c in enumerate(columns)}
    train_data["label"] = np.asarray((y - scaling.y_mean) / scaling.y_std, np.float32)
    options = {"append_one": append} if spec.operator == "tensor" else {}
    op = fusion.create(spec.operator, (1,) * spec.num_modalities, 1, rngs=nnx.Rngs(seed), **options)
    names = [f"x{m}" for m in range(spec.num_modalities)]

    def loss_fn(model, batch, key):
        del key
        z = model([batch[k] for k in names])  # [n, 1]
        return jnp.mean(jnp.square(z[:, 0] - batch["label"]))

    n = y.shape[0]
    result = train.fit(
        op,
        loss_fn,
        optimizer,
        train_data,
        num_steps=num_steps,
        batch_size=n,
        seed=seed,
        workdir=workdir,
        checkpoint_every=checkpoint_every or num_steps,
        log_every=log_every,
        description=spec.slug,
    )
    params = jax.tree.map(np.asarray, result.model.functional_params())
    coef = operator_coefficients(spec.operator, params, append=append)
    loss = float(loss_fn(result.model, train_data, None))  # eager: one compile per fit is enough
    return to_original_scale(coef, scaling), loss


# --------------------------------------------------------------------------- the experiment


def _load(cfg: ml_collections.ConfigDict, seed: int) -> tuple[np.ndarray, ...]:
    # only options that differ from the defaults: those keep the dataset's preset cache
    defaults = data.options(cfg.name)
    options = {
        k: v for k, v in _config.plain(cfg.get("options", {})).items() if v != defaults.get(k)
    }
    reviews = data.load(
        cfg.name, "train", data_dir=cfg.get("data_dir") or None, seed=seed, **options
    )
    if len(cfg.modalities) != 2:
        raise ValueError(
            f"config.data.modalities must name the two modalities (x_A, x_B) of the lecture's "
            f"regressions, got {tuple(cfg.modalities)}"
        )
    a_key, b_key = cfg.modalities
    for key in (a_key, b_key):
        if key not in reviews or reviews[key].shape[1:] != (1,):
            found = {k: v.shape for k, v in reviews.items()}
            raise ValueError(f"config.data.modalities: {cfg.name} has no 1-D {key!r}: {found}")
    x_a = reviews[a_key][:, 0].astype(np.float64)
    x_b = reviews[b_key][:, 0].astype(np.float64)
    return x_a, x_b, reviews["label"].astype(np.float64)


def _summary(values: list[np.ndarray]) -> tuple[list[float], list[float]]:
    """The mean over dataset seeds and the spread (sample std; 0 for one seed)."""
    stacked = np.stack(values)  # [S, p]
    spread = stacked.std(axis=0, ddof=1) if len(values) > 1 else np.zeros(stacked.shape[1])
    return stacked.mean(axis=0).tolist(), spread.tolist()


def markdown_table(results: Mapping[str, Any]) -> str:
    """The slide's table (model | w0 | w1 | w2 | w3): the lecture's, OLS ± SE and the operator's."""
    header = ["model", "fit", *TERMS, "R²"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, row in table_rows(results):
        lines.append("| " + " | ".join([name, *row]) + " |")
    return "\n".join(lines)


def table_rows(results: Mapping[str, Any]) -> list[tuple[str, list[str]]]:
    """``(model, [fit, w0, w1, w2, w3, R²])`` cells, three per regression."""

    def cells(values, errors=None):
        out = []
        for j in range(len(TERMS)):
            if j >= len(values):
                out.append("–")
            elif errors is None:
                out.append(f"{values[j]:.2f}".replace("-", "−"))
            else:
                out.append(f"{values[j]:.2f} ± {errors[j]:.2f}".replace("-", "−"))
        return out

    rows = []
    for name, model in results["models"].items():
        fitted = model["operator_fit"]
        rows.append((name, ["lecture", *cells(model["published"]), ""]))
        ols_fit = model["ols"]
        rows.append(
            ("", ["OLS ± SE", *cells(ols_fit["coef"], ols_fit["se"]), f"{ols_fit['r2']:.3f}"])
        )
        rows.append(("", [model["operator"], *cells(fitted["coef"]), f"{fitted['r2']:.3f}"]))
    return rows


def group_lines_figure(
    x_a: np.ndarray,
    x_b: np.ndarray,
    y: np.ndarray,
    full: Sequence[float],
    additive: Sequence[float],
    path: pathlib.Path,
    *,
    title: str = "",
) -> None:
    """Score vs smiling for critics and non-critics with each group's fitted lines.

    Solid: the interaction model (``w0 + w2 x_B + (w1 + w3 x_B) x_A``, a slope per
    group); dashed: the additive model (``w0 + w1 x_A + w2 x_B``, parallel lines).
    """
    plt = _plots._pyplot()
    fig, ax = plt.subplots(figsize=(5.2, 3.8))
    grid = np.linspace(x_a.min(), x_a.max(), 50)
    for group, label, color in ((0.0, "non-critics", "tab:blue"), (1.0, "critics", "tab:orange")):
        mask = x_b == group
        ax.scatter(x_a[mask], y[mask], s=9, alpha=0.5, color=color, label=label)
        w0, w1, w2, w3 = full
        ax.plot(grid, w0 + w2 * group + (w1 + w3 * group) * grid, color=color, lw=2)
        v0, v1, v2 = additive
        ax.plot(grid, v0 + v2 * group + v1 * grid, color=color, lw=1.5, ls="--")
    ax.plot([], [], color="gray", lw=2, label="y ~ x_A + x_B + x_A·x_B")
    ax.plot([], [], color="gray", lw=1.5, ls="--", label="y ~ x_A + x_B")
    ax.set_xlabel("smiling (x_A)")
    ax.set_ylabel("audience score (y)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title, fontsize=9)
    _plots._save(fig, path)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Fits the three regressions by OLS and by fusion operators; returns (and writes) results."""
    _config.check_seeds(config)
    seeds = tuple(int(s) for s in config.data.seeds)
    if not seeds:
        raise ValueError("config.data.seeds: give at least one dataset seed")
    if len(set(seeds)) < len(seeds):
        raise ValueError(f"config.data.seeds: a seed is listed more than once in {seeds}")
    if "seed" in config.data.get("options", {}):
        raise ValueError("config.data.options.seed: give the dataset seeds in config.data.seeds")
    workdir = pathlib.Path(workdir)
    steps = config.optim.num_steps
    optimizer = _training.build_optimizer(
        config.optim.name,
        config.optim.learning_rate,
        steps,
        schedule=config.optim.schedule,
        clip_norm=config.optim.get("clip_norm"),
    )
    # the datasets, the train settings and the tensor operator's option are checked before
    # the workdir is touched, so that a bad config run with resume=False leaves the
    # previous run in place
    datasets = {seed: _load(config.data, seed) for seed in seeds}
    for _, _, y in datasets.values():  # full-batch fits
        train.check_fit_settings(
            num_steps=steps,
            batch_size=len(y),
            log_every=config.train.log_every,
            checkpoint_every=config.train.checkpoint_every,
        )
    append = config.model.tensor_append
    _models.check_model(
        lambda: fusion.create("tensor", (1, 1), 1, rngs=nnx.Rngs(0), append_one=append),
        "config.model.tensor_append",
    )
    train.prepare_workdir(workdir, config.to_dict(), resume=config.resume, ignore=("resume",))
    per_seed: dict[str, list[dict[str, Any]]] = {spec.name: [] for spec in SPECS}
    shown = datasets[seeds[0]]  # the first dataset, drawn in plots/linear_case.png
    for seed, (x_a, x_b, y) in datasets.items():
        for spec in SPECS:
            x = design(x_a, x_b, spec.num_terms)
            coef, se = ols(x, y)
            fitted, loss = fit_operator(
                spec,
                x_a,
                x_b,
                y,
                optimizer=optimizer,
                num_steps=steps,
                seed=config.seed,
                workdir=workdir / "runs" / f"seed_{seed}" / spec.slug,
                standardize=config.model.standardize,
                append=append,
                log_every=config.train.log_every,
                checkpoint_every=config.train.checkpoint_every,
            )
            per_seed[spec.name].append(
                {
                    "seed": seed,
                    "n": int(y.shape[0]),
                    "ols": {"coef": coef, "se": se, "r2": r_squared(x, y, coef)},
                    "operator_fit": {
                        "coef": fitted,
                        "r2": r_squared(x, y, fitted),
                        "final_loss": loss,
                    },
                }
            )

    models = {}
    for spec in SPECS:
        runs = per_seed[spec.name]
        ols_coef, ols_spread = _summary([r["ols"]["coef"] for r in runs])
        op_coef, op_spread = _summary([r["operator_fit"]["coef"] for r in runs])
        models[spec.name] = {
            "operator": spec.operator,
            "terms": list(TERMS[: spec.num_terms]),
            "published": list(PUBLISHED[spec.name]),
            "n": runs[0]["n"],
            "ols": {
                "coef": ols_coef,
                "se": np.mean([r["ols"]["se"] for r in runs], axis=0).tolist(),
                "spread": ols_spread,
                "r2": float(np.mean([r["ols"]["r2"] for r in runs])),
            },
            "operator_fit": {
                "coef": op_coef,
                "spread": op_spread,
                "r2": float(np.mean([r["operator_fit"]["r2"] for r in runs])),
                "max_abs_diff_from_ols": float(
                    max(np.max(np.abs(r["operator_fit"]["coef"] - r["ols"]["coef"])) for r in runs)
                ),
            },
            "per_seed": [_as_lists(r) for r in runs],
        }
    results = {
        "dataset": config.data.name,
        "dataset_seeds": list(seeds),
        "standardize": bool(config.model.standardize),
        "steps": steps,
        "note": (
            "coef: mean over the dataset seeds; se: the mean per-dataset OLS standard "
            "error; spread: the sample std of the coefficient over the dataset seeds"
        ),
        "models": models,
    }
    train.write_json(workdir / "results.json", results)

    table = markdown_table(results)
    n = models[SPECS[0].name]["n"]
    caption = (
        f"{config.data.name}: n = {n} per dataset, {_seed_text(seeds)}; "
        f"operators trained {steps} steps (full batch)"
    )
    if jax.process_index() == 0:
        (workdir / "table.md").write_text(f"{caption}\n\n{table}\n")
        print(f"\n{caption}\n\n{table}\n", flush=True)
    header = ["model", "fit", *TERMS, "R²"]
    _plots.table_figure(
        header,
        [[name, *row] for name, row in table_rows(results)],
        workdir / "plots" / "table.png",
        title=caption,
    )
    x_a, x_b, y = shown
    first_runs = {name: runs[0]["operator_fit"]["coef"] for name, runs in per_seed.items()}
    group_lines_figure(
        x_a,
        x_b,
        y,
        first_runs[SPECS[2].name],
        first_runs[SPECS[1].name],
        workdir / "plots" / "linear_case.png",
        title=f"{config.data.name} (dataset seed {seeds[0]}): lines fitted by the operators",
    )
    return results


def _as_lists(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, dict):
        return {k: _as_lists(v) for k, v in value.items()}
    return value


def _seed_text(seeds: Sequence[int]) -> str:
    if len(seeds) == 1:
        return f"dataset seed {seeds[0]}"
    if len(seeds) > 2 and list(seeds) == list(range(seeds[0], seeds[0] + len(seeds))):
        return f"mean over dataset seeds {seeds[0]}–{seeds[-1]}"
    return "mean over dataset seeds " + ", ".join(str(s) for s in seeds)
