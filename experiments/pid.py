"""PID of the synthetic datasets and of fusion models trained on them (Liang et al. 2023).

For every dataset of the config:

- the *dataset PID*: redundancy, uniqueness (of each modality) and synergy of the two
  modalities about the true label, from ``interactions.pid_from_samples`` (each
  modality clustered by k-means, the empirical joint decomposed exactly);
- for every fusion-zoo model (trained with ``experiments/fusion_zoo.py``'s settings, or
  read from an existing zoo workdir), the *model PID*: the same with the model's
  predicted class in place of the label, on the same examples and clusters;
- their agreement, ``1 − Σ|Δ| / (Σ dataset + Σ model)`` over the four terms (1 when the
  model's predictions carry the same interactions as the labels), next to the model's
  test accuracy, and the correlation of agreement with accuracy over all (model,
  dataset) pairs (Liang et al. report r = 0.776 over 10 fusion models).

Values in bits; the README compares them with Liang et al.'s published estimates (which are
in nats on other generators and discretizations, so only the dominant term is comparable).

References:
  Liang et al., "Quantifying & Modeling Multimodal Interactions: An Information
  Decomposition Framework", NeurIPS 2023.
  Bertschinger et al., "Quantifying Unique Information", Entropy 2014.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from experiments import _config, _evaluation, _plots, _tasks, _training, fusion_zoo
from mmfuse import interactions, train

TERMS = ("redundancy", "unique_1", "unique_2", "synergy")
# what decides a fusion-zoo model: a zoo workdir is reused only where these agree
ZOO_SETTINGS = ("model", "optim", "train", "data")
SHORT = {"redundancy": "R", "unique_1": "U1", "unique_2": "U2", "synergy": "S"}


def decomposition(value: Any) -> dict[str, float]:
    return {term: float(getattr(value, term)) for term in TERMS}


def agreement(a: dict[str, float], b: dict[str, float]) -> float:
    """``1 − Σ|a − b| / (Σ a + Σ b)`` over the four PID terms, in [0, 1]."""
    total = sum(a.values()) + sum(b.values())
    if total == 0:
        return 1.0
    return 1.0 - sum(abs(a[t] - b[t]) for t in TERMS) / total


def predictions(model, task: _tasks.Task, split: str) -> np.ndarray:
    """The model's predicted classes ``[N]`` on a split."""
    xs = task.inputs(split)
    logits = jax.jit(lambda m, xs: m(xs))(model, xs)  # [N, C]
    return np.asarray(jnp.argmax(logits, axis=-1))


def check_config(config: ml_collections.ConfigDict) -> None:
    """Checks every dataset and model before the workdir is touched or anything trained:
    the zoo workdir (if set), the PID settings, two modalities each, and the zoo's checks
    of every run."""
    if config.get("zoo_workdir"):
        check_zoo_workdir(config)
    splits = _tasks.SPLITS  # those fusion_zoo.load_dataset loads
    if config.pid.split not in splits:
        raise ValueError(f"config.pid.split={config.pid.split!r} is not one of {', '.join(splits)}")
    _config.check_count("pid.num_clusters", config.pid.num_clusters, 1)
    _config.check_count("pid.pca_dims", config.pid.get("pca_dims"), 1)
    datasets = [
        fusion_zoo.parse_dataset(s) for s in fusion_zoo.unique_specs("datasets", config.datasets)
    ]
    models = [fusion_zoo.parse_model(m) for m in fusion_zoo.unique_specs("models", config.models)]
    probes = fusion_zoo.probe(config, datasets)
    for dataset, task in zip(datasets, probes, strict=True):
        modalities = task.modalities
        if len(modalities) != 2:
            count = "1 modality" if len(modalities) == 1 else f"{len(modalities)} modalities"
            example = f", e.g. '{dataset.name}:{'+'.join(modalities[:2])}'"
            raise ValueError(
                f"pid: {dataset.spec!r} has {count} ({', '.join(modalities)}); PID is of two: "
                "name two of them" + (example if len(modalities) > 2 else "")
            )
    fusion_zoo.check_runs(config, probes, models)


def run_dataset(config, spec: str, workdir: pathlib.Path, writer) -> dict[str, Any]:
    dataset = fusion_zoo.parse_dataset(spec)
    task = fusion_zoo.load_dataset(dataset, config)
    split = config.pid.split
    x1, x2 = task.inputs(split)
    options = dict(
        num_clusters=config.pid.num_clusters,
        pca_dims=config.pid.get("pca_dims"),
        seed=config.pid.seed,
    )
    data_pid = interactions.pid_from_samples(x1, x2, task.splits[split]["label"], **options)
    out: dict[str, Any] = {
        "dataset": decomposition(data_pid),
        "dataset_converged": bool(data_pid.converged),
        "models": {},
    }
    seed = int(config.seeds[0])
    for spec_model in config.models:
        model = fusion_zoo.parse_model(spec_model)
        run = pathlib.Path("runs", dataset.folder, model.folder, f"seed{seed}")
        record_path = workdir / "pid" / dataset.folder / f"{model.folder}.json"
        if record_path.exists():
            out["models"][model.spec] = train.read_json(record_path)
            continue
        run_dir = workdir / run  # a run the zoo lacks is trained here, not in the zoo
        if (
            config.get("zoo_workdir")
            and (pathlib.Path(config.zoo_workdir) / run / "run.json").exists()
        ):
            run_dir = pathlib.Path(config.zoo_workdir) / run
        if not (run_dir / "run.json").exists():
            fusion_zoo.train_run(config, task, model, seed, run_dir)
        # A finished run restores its best parameters at once.
        _, result = fusion_zoo.fit_model(config, task, model, seed, run_dir)
        model_pid = interactions.pid_from_samples(
            x1, x2, predictions(result.model, task, split), **options
        )
        terms = decomposition(model_pid)
        record = {
            "pid": terms,
            "agreement": agreement(out["dataset"], terms),
            "test": _evaluation.test_metrics(result.model, task)[task.metric],
            "metric": task.metric,
        }
        train.write_json(record_path, record)
        writer.write(0, dataset=spec, model=model.spec, **record)
        out["models"][model.spec] = record
    return out


def check_zoo_workdir(config: ml_collections.ConfigDict) -> None:
    """A ``config.zoo_workdir`` must hold a fusion-zoo run trained with this config's
    ``ZOO_SETTINGS`` (its data folder aside), or its models would not be the ones
    this config describes."""
    zoo = pathlib.Path(config.zoo_workdir)
    if not (zoo / "config.json").exists():
        raise ValueError(f"config.zoo_workdir: {zoo} holds no run (no config.json)")
    recorded = train.read_json(zoo / "config.json")
    if recorded.get("trainer") != "fusion_zoo":
        raise ValueError(f"config.zoo_workdir: {zoo} holds a {recorded.get('trainer')!r} run")
    mine = json.loads(json.dumps(config.to_dict(), default=str))

    def flat(value: Any, prefix: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            return {prefix: value}
        return {
            k: v for key, item in value.items() for k, v in flat(item, f"{prefix}.{key}").items()
        }

    differences = []
    for section in ZOO_SETTINGS:
        theirs, ours = flat(recorded.get(section), section), flat(mine.get(section), section)
        for key in sorted(set(theirs) | set(ours)):
            if key != "data.data_dir" and theirs.get(key) != ours.get(key):
                differences.append(f"{key}: {theirs.get(key)!r} there, {ours.get(key)!r} here")
    if differences:
        raise ValueError(
            f"config.zoo_workdir: {zoo} trained its models with other settings ("
            + "; ".join(differences)
            + "); override these keys to match, or leave zoo_workdir unset to train here"
        )


def format_tables(results: dict[str, Any], models: list[str]) -> str:
    lines = ["| dataset | R | U1 | U2 | S | dominant |", "|---|---|---|---|---|---|"]
    for spec, r in results.items():
        d = r["dataset"]
        dominant = SHORT[max(TERMS, key=lambda t: d[t])]
        cells = " | ".join(f"{d[t]:.3f}" for t in TERMS)
        lines.append(f"| {spec} | {cells} | {dominant} |")
    lines += ["", "| model | " + " | ".join(results) + " |", "|---|" + "---|" * len(results)]
    for model in models:
        cells = []
        for r in results.values():
            m = r["models"][model]
            cells.append(f"{m['test']:.2f} / {m['agreement']:.2f}")
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    workdir = pathlib.Path(workdir)
    _config.check_seeds(config)
    check_config(config)
    writer = _training.open_run(config, workdir, ignore=("zoo_workdir",))
    if config.get("compilation_cache", False):
        fusion_zoo.use_compilation_cache(workdir / "xla_cache")
    models = [fusion_zoo.parse_model(m).spec for m in config.models]
    results = {spec: run_dataset(config, spec, workdir, writer) for spec in config.datasets}
    pairs = [(m["agreement"], m["test"]) for r in results.values() for m in r["models"].values()]
    agreements, accuracies = np.array(pairs).T
    correlation = (
        float(np.corrcoef(agreements, accuracies)[0, 1])
        if len(pairs) > 2 and np.std(agreements) > 0 and np.std(accuracies) > 0
        else None
    )
    table = format_tables(results, models)
    r_text = "n/a" if correlation is None else f"{correlation:.3f}"
    table += (
        f"\n\nCells: test accuracy / agreement of model PID with dataset PID; correlation "
        f"of agreement with accuracy over all {len(pairs)} pairs: r = {r_text}."
    )
    summary = {"datasets": results, "correlation": correlation, "table": table}
    train.write_json(workdir / "results.json", summary)
    names = list(results)
    _plots.grouped_bars(
        names,
        {SHORT[t]: [results[n]["dataset"][t] for n in names] for t in TERMS},
        workdir / "plots" / "dataset_pid.png",
        ylabel="bits",
        title="Dataset PID: redundancy, uniqueness and synergy",
    )
    _agreement_scatter(agreements, accuracies, workdir / "plots" / "agreement.png", r_text)
    print(table)
    return summary


def _agreement_scatter(agreements, accuracies, path, r_text) -> None:
    plt = _plots._pyplot()
    fig, ax = plt.subplots(figsize=(4, 3.2))
    ax.scatter(agreements, accuracies, s=12)
    ax.set_xlabel("agreement of model PID with dataset PID")
    ax.set_ylabel("test accuracy")
    ax.set_title(f"r = {r_text}")
    ax.grid(alpha=0.3)
    _plots._save(fig, path)
