"""The EMAP table trainer (and the quickstart config behind scripts/demo.sh)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import quickstart
from experiments import emap_table
from mmfuse import fusion, interactions, train
from tests.experiments.cli import run_main
from tests.experiments.standardize_checks import assert_standardized, toy_task


@pytest.mark.parametrize("standardize", [False, True])
def test_a_dataset_entry_can_ask_for_standardized_modalities(monkeypatch, standardize):
    toy = toy_task()
    monkeypatch.setattr(emap_table._tasks, "load_task", lambda name, **kwargs: toy)
    config = quickstart.get_config()
    task = emap_table.load_dataset(config, {"name": "toy", "standardize": standardize})
    if standardize:
        assert_standardized(task, toy)
    else:
        assert task.splits["train"]["a"] is toy.splits["train"]["a"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, data_dir):
    workdir = tmp_path_factory.mktemp("emap_table")
    out = run_main("--config=configs/quickstart.py:tiny", f"--workdir={workdir}", data_dir=data_dir)
    assert out.returncode == 0, out.stderr[-3000:]
    return workdir, out.stdout


def test_xor_is_solved_by_interaction_models_and_its_emap_collapses(tiny_run):
    workdir, stdout = tiny_run
    xor = train.read_json(workdir / "results.json")["datasets"]["synthetic/xor"]
    rows = xor["rows"]
    assert rows["additive"]["test"] < 0.6  # no additive function beats chance on xor
    assert rows["additive"]["emap"] == pytest.approx(rows["additive"]["test"], abs=0.02)
    assert xor["best_test"] > 0.9
    assert xor["best_emap"] < 0.65  # the best model's accuracy came from the interaction
    assert "| best + EMAP |" in stdout
    # every cell is on the 300 test examples EMAP used, and the caption says so
    assert xor["num_examples"] == 300 and xor["test_size"] > 300
    assert "same examples: every test example (except synthetic/xor: the first 300 of" in stdout
    for name in ("config.json", "metrics.jsonl", "plots/emap.png", "plots/table.png"):
        assert (workdir / name).exists(), name
    assert len(train.read_metrics(workdir / "metrics.jsonl")) == len(rows)


def test_a_rerun_reads_the_finished_runs_back(tiny_run, data_dir):
    workdir, _ = tiny_run
    before = train.read_json(workdir / "results.json")
    config = quickstart.get_config("tiny")
    results = emap_table.train_and_evaluate(config, workdir)
    assert train.read_json(workdir / "results.json") == before
    assert results["table"] == before["table"]


def test_residual_model_trains_only_the_residual_and_emap_passes_the_linear_part_through():
    rngs = nnx.Rngs(0)
    linear = fusion.create("additive", (3, 4), 2, rngs=rngs)
    residual = fusion.create("tensor", (3, 4), 2, rngs=rngs)
    model = emap_table.PlusFixedModel(linear, residual)
    params = nnx.state(model, nnx.Param)
    assert set(jax.tree.leaves(jax.tree.map(jnp.shape, params))) == set(
        jax.tree.leaves(jax.tree.map(jnp.shape, nnx.state(residual, nnx.Param)))
    )
    key = jax.random.key(1)
    xs = (jax.random.normal(key, (16, 3)), jax.random.normal(jax.random.fold_in(key, 1), (16, 4)))
    np.testing.assert_allclose(model(xs), linear(xs) + residual(xs), rtol=1e-6, atol=1e-6)
    # EMAP is linear and the identity on additive functions.
    np.testing.assert_allclose(
        interactions.emap(model, xs),
        linear(xs) + interactions.emap(residual, xs),
        rtol=1e-5,
        atol=1e-5,
    )
