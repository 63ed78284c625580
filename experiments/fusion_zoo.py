"""Every fusion operator (and early / late fusion) trained on many datasets with several seeds.

``train_and_evaluate(config, workdir)`` trains each model of ``config.models`` on each
dataset of ``config.datasets`` with each seed of ``config.seeds``, and reports the mean
and standard deviation over seeds of the test metric, the parameter count and the
median train-step time. It writes::

    workdir/config.json
    workdir/runs/<dataset>/<model>/seed<k>/{checkpoints/, metrics.jsonl, run.json}
    workdir/metrics.jsonl          one line per finished run
    workdir/results.json           the aggregate (and the markdown tables)
    workdir/results.md             the markdown tables
    workdir/plots/{fusion_zoo,table}.png
    workdir/xla_cache/             compiled programs (``config.compilation_cache``)

A run's ``run.json`` is written when it finishes, so rerunning on the same workdir skips
finished runs and resumes an interrupted one from its newest checkpoint; the result is
the one an uninterrupted zoo gives, except for the timings (``step_ms``, ``seconds``),
which are wall-clock measurements. The lists of datasets, models and seeds may change
between reruns (other settings may not): new runs are trained, the others reused, and
the aggregate covers the runs the config lists.

Model names: an operator of ``mmfuse.fusion.names()`` (intermediate fusion: an MLP
encoder per modality, the operator, an MLP head), ``early``, ``late``, or
``raw:<operator>`` (the operator maps the raw modalities straight to the outputs).
Dataset names: a catalogue name, or ``<name>:<modality>+<modality>[+...]`` for a subset
of its modalities, e.g. ``uci_mfeat:fou+kar``.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
import statistics
import time
from collections.abc import Sequence
from typing import Any

import jax
import ml_collections
from flax import nnx

from experiments import _config, _evaluation, _models, _plots, _tasks, _training
from mmfuse import data, fusion, train

SPECIAL_MODELS = ("early", "late")
RAW_PREFIX = "raw:"
STEP_TIME_NOTE = "step_ms and seconds are wall-clock timings: they differ between reruns"


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A dataset of the zoo: a catalogue name and, optionally, which modalities to use."""

    spec: str
    name: str
    modalities: tuple[str, ...]

    @property
    def folder(self) -> str:
        return self.spec.replace("/", "-").replace(":", "-")


@dataclasses.dataclass(frozen=True)
class Model:
    """A model of the zoo: its ``_models.build_model`` kind and fusion operator."""

    spec: str
    kind: str
    fusion: str

    @property
    def folder(self) -> str:
        return self.spec.replace(":", "-")


def parse_dataset(spec: str) -> Dataset:
    name, _, views = spec.partition(":")
    if name not in data.names():
        raise ValueError(f"config.datasets: unknown dataset {name!r} in {spec!r}")
    modalities = tuple(views.split("+")) if views else ()
    if views and not all(modalities):
        raise ValueError(f"config.datasets: empty modality name in {spec!r}")
    return Dataset(spec, name, modalities)


def parse_model(spec: str) -> Model:
    if spec in SPECIAL_MODELS:
        return Model(spec, spec, "nonlinear")
    kind, name = ("raw", spec[len(RAW_PREFIX) :]) if spec.startswith(RAW_PREFIX) else ("", spec)
    if name not in fusion.names():
        raise ValueError(
            f"config.models: unknown model {spec!r}; models: {', '.join(SPECIAL_MODELS)}, "
            f"an operator ({', '.join(fusion.names())}) or raw:<operator>"
        )
    return Model(spec, kind or "intermediate", name)


def unique_specs(kind: str, specs: Any) -> list[str]:
    specs = list(specs)
    repeated = sorted({s for s in specs if specs.count(s) > 1})
    if repeated:
        raise ValueError(f"config.{kind}: listed more than once: {', '.join(map(str, repeated))}")
    if not specs:
        raise ValueError(f"config.{kind} is empty")
    return specs


def use_compilation_cache(directory: pathlib.Path) -> None:
    """Keeps compiled XLA programs in ``directory``, unless a cache is configured already.

    The zoo compiles the same programs over and over: ``fit`` jits a new train step per
    run, but a model's step differs neither between seeds nor between datasets of the
    same shapes (the seven synthetic tasks), so all but the first compilation of each
    are cache hits. This sets process-wide JAX options.
    """
    if jax.config.jax_compilation_cache_dir:  # e.g. $JAX_COMPILATION_CACHE_DIR
        return
    from jax.experimental.compilation_cache import compilation_cache

    jax.config.update("jax_compilation_cache_dir", str(directory))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    # JAX decides whether to use the cache at its first compilation; decide again.
    compilation_cache.reset_cache()


def load_dataset(
    dataset: Dataset,
    config: ml_collections.ConfigDict,
    splits: Sequence[str] = _tasks.SPLITS,
) -> _tasks.Task:
    """The splits of ``dataset`` in memory (standardized if ``config.data.standardize``)."""
    task = _tasks.load_task(
        dataset.name,
        splits=splits,
        data_dir=config.data.get("data_dir"),
        modalities=dataset.modalities,
    )
    task = dataclasses.replace(task, name=dataset.spec)
    return _tasks.standardized(task, splits[0]) if config.data.get("standardize") else task


def probe(config: ml_collections.ConfigDict, datasets: Sequence[Dataset]) -> list[_tasks.Task]:
    """Each dataset's task with one training example: its modalities, shapes and classes."""
    for dataset in datasets:
        _tasks.check_splits(dataset.name)
    return [load_dataset(d, config, splits=(_tasks.PROBE_SPLIT,)) for d in datasets]


def check_runs(
    config: ml_collections.ConfigDict, probes: Sequence[_tasks.Task], models: Sequence[Model]
) -> None:
    """Checks every run before the workdir is touched or anything is trained.

    The optimizer and the train settings work, ``config.model.fusion_options`` names
    operators only, and every model builds (from shapes alone) on every dataset (its
    ``probe``).
    """
    _training.check_training(config)
    unknown = sorted(set(config.model.fusion_options) - set(fusion.names()))
    if unknown:
        raise ValueError(
            f"config.model.fusion_options: {', '.join(unknown)} is no fusion operator; "
            f"operators: {', '.join(fusion.names())}"
        )
    for task in probes:
        for model in models:
            build = functools.partial(
                _models.model_from_config, model_config(config, model), task, 0
            )
            _models.check_model(build, f"model {model.spec!r} on {task.name}")


def model_config(config: ml_collections.ConfigDict, model: Model) -> ml_collections.ConfigDict:
    """The model section of ``configs/supervised.py`` layout for one model of the zoo."""
    cfg = {k: v for k, v in _config.plain(config.model).items() if k != "fusion_options"}
    # Early fusion's MLP and late fusion's predictors keep their own defaults.
    special = model.kind in SPECIAL_MODELS
    options = {} if special else config.model.fusion_options.get(model.fusion, {})
    return ml_collections.ConfigDict(
        {**cfg, "kind": model.kind, "fusion": model.fusion, "fusion_options": options}
    )


def fit_model(
    config: ml_collections.ConfigDict,
    task: _tasks.Task,
    model: Model,
    seed: int,
    run_dir: pathlib.Path,
) -> tuple[nnx.Module, train.FitResult]:
    """Builds one model of the zoo and fits it; a finished run is restored, not retrained."""
    module = _models.model_from_config(model_config(config, model), task, seed)
    loss_fn, fit_kwargs = _training.fit_arguments(config, task, module, seed=seed)
    result = train.fit(
        module,
        loss_fn,
        train_data=task.splits["train"],
        workdir=run_dir,
        description=f"{task.name} {model.spec} seed {seed}",
        **fit_kwargs,
    )
    return module, result


def train_run(
    config: ml_collections.ConfigDict,
    task: _tasks.Task,
    model: Model,
    seed: int,
    run_dir: pathlib.Path,
) -> dict[str, Any]:
    """Trains (or resumes) one run; returns its record, also written to ``run.json``."""
    start = time.perf_counter()
    record: dict[str, Any] = {
        "dataset": task.name,
        "model": model.spec,
        "seed": seed,
        "config": _config.plain(model_config(config, model)),
        "metric": task.metric,
    }
    try:
        module, result = fit_model(config, task, model, seed, run_dir)
    except train.NonFiniteLossError as error:
        # A diverged run is a result of the zoo (the operator at this learning rate),
        # not a reason to stop the others.
        module = _models.model_from_config(model_config(config, model), task, seed)
        record.update(diverged=str(error), test=None, step_ms=None)
    else:
        record.update(
            steps=result.step,
            best_step=result.best_step,
            stopped_early=result.stopped_early,
            validation={"best": result.best_metric},
            test=_evaluation.test_metrics(result.model, task),
            step_ms=None if result.step_seconds is None else 1e3 * result.step_seconds,
        )
    record["params"] = _models.count_params(module)
    record["seconds"] = time.perf_counter() - start
    train.write_json(run_dir / "run.json", record)
    return record


def _read_record(run_dir: pathlib.Path) -> dict[str, Any] | None:
    path = run_dir / "run.json"
    return train.read_json(path) if path.exists() else None


def _mean_std(values: list[float]) -> tuple[float, float]:
    """The mean and the sample standard deviation (0 for a single value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def aggregate(
    records: dict[tuple[str, str], list[dict[str, Any]]],
    datasets: list[str],
    models: list[str],
) -> dict[str, dict[str, dict[str, Any]]]:
    """Per dataset, per model: mean and std of the test metric, parameters, step time."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for dataset in datasets:
        out[dataset] = {}
        for model in models:
            runs = records[dataset, model]
            finished = [r for r in runs if r["test"] is not None]
            metric = runs[0]["metric"]
            values = [r["test"][metric] for r in finished]
            step_ms = [r["step_ms"] for r in finished if r.get("step_ms") is not None]
            entry: dict[str, Any] = {
                "metric": metric,
                "values": values,
                "seeds": [r["seed"] for r in finished],
                "diverged": [r["seed"] for r in runs if r["test"] is None],
                "params": runs[0]["params"],
                "step_ms": statistics.median(step_ms) if step_ms else None,
            }
            if values:
                entry["mean"], entry["std"] = _mean_std(values)
            out[dataset][model] = entry
    return out


def _cell(entry: dict[str, Any]) -> str:
    if "mean" not in entry:
        return "diverged"
    cell = f"{entry['mean']:.3f} ± {entry['std']:.3f}"
    return cell + (f" ({len(entry['diverged'])} diverged)" if entry["diverged"] else "")


def tables(
    summary: dict[str, dict[str, dict[str, Any]]], datasets: list[str], models: list[str]
) -> tuple[list[str], list[list[str]], str]:
    """The metric table's header and rows, and both tables (metric; params and ms) as markdown."""
    header = ["model", *datasets]
    rows = [[m, *(_cell(summary[d][m]) for d in datasets)] for m in models]

    def cost(entry: dict[str, Any]) -> str:
        ms = "–" if entry["step_ms"] is None else f"{entry['step_ms']:.2f}"
        return f"{entry['params']:,} / {ms}"

    costs = [[m, *(cost(summary[d][m]) for d in datasets)] for m in models]
    metrics = sorted({summary[d][m]["metric"] for d in datasets for m in models})

    def markdown(rows: list[list[str]]) -> list[str]:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        return lines + ["| " + " | ".join(r) + " |" for r in rows]

    text = "\n".join(
        [
            f"Test {'/'.join(metrics)}, mean ± std over seeds:",
            "",
            *markdown(rows),
            "",
            "Parameters / median train-step time (ms):",
            "",
            *markdown(costs),
        ]
    )
    return header, rows, text


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Trains the zoo (skipping finished runs); returns (and writes) the aggregate."""
    workdir = pathlib.Path(workdir)
    _config.check_seeds(config)
    datasets = [parse_dataset(s) for s in unique_specs("datasets", config.datasets)]
    models = [parse_model(s) for s in unique_specs("models", config.models)]
    seeds = [int(s) for s in unique_specs("seeds", config.seeds)]
    check_runs(config, probe(config, datasets), models)
    train.prepare_workdir(
        workdir,
        config.to_dict(),
        resume=config.resume,
        ignore=("resume", "compilation_cache", "datasets", "models", "seeds"),
    )
    if config.get("compilation_cache", False):
        use_compilation_cache(workdir / "xla_cache")
    # Rewritten on each invocation: one line per finished run, skipped ones included.
    writer = train.MetricWriter(workdir / "metrics.jsonl")
    records: dict[tuple[str, str], list[dict[str, Any]]] = {}
    total, done = len(datasets) * len(models) * len(seeds), 0
    for dataset in datasets:
        task = None  # loaded once, when a run of this dataset still has to train
        for model in models:
            for seed in seeds:
                run_dir = workdir / "runs" / dataset.folder / model.folder / f"seed{seed}"
                record = _read_record(run_dir)
                reused = record is not None
                if record is None:
                    if task is None:
                        task = load_dataset(dataset, config)
                    record = train_run(config, task, model, seed, run_dir)
                records.setdefault((dataset.spec, model.spec), []).append(record)
                test = record["test"]
                scores = {} if test is None else {f"test/{k}": v for k, v in test.items()}
                writer.write(
                    record.get("steps", 0),
                    dataset=dataset.spec,
                    model=model.spec,
                    seed=seed,
                    params=record["params"],
                    step_ms=record["step_ms"],
                    **scores,
                )
                done += 1
                metric = record["metric"]
                outcome = "diverged" if test is None else f"{metric} {test[metric]:.4f}"
                how = "finished before" if reused else f"{record['seconds']:.1f} s"
                print(
                    f"[{done}/{total}] {dataset.spec} {model.spec} seed {seed}: {outcome} ({how})",
                    flush=True,
                )

    names = [d.spec for d in datasets]
    specs = [m.spec for m in models]
    summary = aggregate(records, names, specs)
    header, rows, text = tables(summary, names, specs)
    results = {
        "datasets": names,
        "models": specs,
        "seeds": seeds,
        "results": summary,
        "table": text,
        "note": STEP_TIME_NOTE,
    }
    train.write_json(workdir / "results.json", results)
    if jax.process_index() == 0:
        (workdir / "results.md").write_text(text + "\n")
    metric = "/".join(sorted({summary[d][m]["metric"] for d in names for m in specs}))
    _plots.grouped_bars(
        names,
        {m: [summary[d][m].get("mean", float("nan")) for d in names] for m in specs},
        workdir / "plots" / "fusion_zoo.png",
        errors={m: [summary[d][m].get("std", 0.0) for d in names] for m in specs},
        ylabel=f"test {metric}",
        title=f"Fusion zoo: test {metric}, mean ± std over {len(seeds)} seed(s)",
    )
    _plots.table_figure(
        header, rows, workdir / "plots" / "table.png", title=f"test {metric} (mean ± std)"
    )
    print(text, flush=True)
    return results
