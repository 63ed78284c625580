"""The fusion zoo end to end (quick variant): its outputs, what it finds, and reruns."""

import json

import jax
import pytest
from jax.experimental.compilation_cache import compilation_cache

from configs import fusion_zoo as zoo_config
from experiments import fusion_zoo
from mmfuse import train

DATASETS = ("synthetic/xor", "synthetic/additive")
MODELS = ("tensor", "late", "raw:additive")


@pytest.fixture(autouse=True)
def _restore_compilation_cache():
    # The zoo turns on JAX's persistent compilation cache for the whole process.
    saved = {
        name: getattr(jax.config, name)
        for name in ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs")
    }
    yield
    for name, value in saved.items():
        jax.config.update(name, value)
    compilation_cache.reset_cache()


def _run_jsons(workdir):
    return sorted((workdir / "runs").glob("*/*/seed*/run.json"))


def test_quick_zoo_outputs_findings_and_reruns(tmp_path, data_dir, monkeypatch, capsys):
    config = zoo_config.get_config("quick")
    assert tuple(config.datasets) == DATASETS and tuple(config.models) == MODELS
    config.data.data_dir = str(data_dir)
    workdir = tmp_path / "zoo"

    results = fusion_zoo.train_and_evaluate(config, str(workdir))

    # Structure: one run folder, run.json and metrics line per (dataset, model, seed).
    runs = _run_jsons(workdir)
    assert [p.relative_to(workdir / "runs").parent.as_posix() for p in runs] == sorted(
        f"{d.replace('/', '-')}/{m.replace(':', '-')}/seed0" for d in DATASETS for m in MODELS
    )
    lines = train.read_metrics(workdir / "metrics.jsonl")
    assert [(r["dataset"], r["model"]) for r in lines] == [(d, m) for d in DATASETS for m in MODELS]
    assert all(r["step"] == config.train.num_steps for r in lines)
    for name in ("config.json", "results.md", "plots/fusion_zoo.png", "plots/table.png"):
        assert (workdir / name).is_file(), name
    assert json.loads((workdir / "results.json").read_text()) == results
    assert results["datasets"] == list(DATASETS) and results["models"] == list(MODELS)
    summary = results["results"]
    for dataset in DATASETS:
        for model in MODELS:
            entry = summary[dataset][model]
            assert entry["metric"] == "accuracy" and entry["seeds"] == [0]
            assert entry["std"] == 0.0 and entry["params"] > 0 and entry["step_ms"] > 0
    # Raw additive fusion is a linear map of the two 16-wide modalities to 2 logits.
    assert summary["synthetic/xor"]["raw:additive"]["params"] == 2 * 16 * 2 + 2
    printed = capsys.readouterr().out
    assert results["table"] in printed and results["table"] in (workdir / "results.md").read_text()
    assert "| tensor | " in results["table"]

    # Findings: xor needs the interaction of the modalities; an additive task does not.
    xor, additive = summary["synthetic/xor"], summary["synthetic/additive"]
    assert xor["tensor"]["mean"] > 0.95
    assert xor["late"]["mean"] < 0.6 and xor["raw:additive"]["mean"] < 0.6
    assert min(additive[m]["mean"] for m in MODELS) > 0.85

    # A rerun trains nothing and rewrites the same aggregate.
    mtimes = [p.stat().st_mtime_ns for p in runs]

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(train, "fit", no_training)
    assert fusion_zoo.train_and_evaluate(config, str(workdir)) == results
    assert [p.stat().st_mtime_ns for p in runs] == mtimes
    assert len(train.read_metrics(workdir / "metrics.jsonl")) == len(lines)

    # A run without run.json (stopped after its last checkpoint) resumes: fit runs once,
    # from the final checkpoint, and the run's test metrics are those of the first time.
    monkeypatch.undo()
    lost = workdir / "runs" / "synthetic-xor" / "tensor" / "seed0" / "run.json"
    before = json.loads(lost.read_text())
    lost.unlink()
    calls, real_fit = [], train.fit

    def counted_fit(*args, **kwargs):
        calls.append(kwargs["workdir"])
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(train, "fit", counted_fit)
    again = fusion_zoo.train_and_evaluate(config, str(workdir))
    assert calls == [lost.parent]
    after = json.loads(lost.read_text())
    assert after["test"] == before["test"] and after["steps"] == before["steps"]
    assert again["results"]["synthetic/xor"]["tensor"]["values"] == xor["tensor"]["values"]


def test_unknown_model_or_dataset_is_refused_before_training(tmp_path):
    config = zoo_config.get_config("quick")
    config.models = ("tensor", "tensr")
    with pytest.raises(ValueError, match="unknown model 'tensr'"):
        fusion_zoo.train_and_evaluate(config, str(tmp_path))
    config = zoo_config.get_config("quick")
    config.datasets = ("synthetic/xr",)
    with pytest.raises(ValueError, match="unknown dataset 'synthetic/xr'"):
        fusion_zoo.train_and_evaluate(config, str(tmp_path))
    assert not any(tmp_path.iterdir())
