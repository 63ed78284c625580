"""The MRO trainer: interaction branches are used on xor, not on additive data; EMAP agrees."""

import numpy as np
import pytest

from configs import mro as mro_config
from experiments import _tasks, mro
from mmfuse import train


@pytest.fixture(scope="module")
def results(tmp_path_factory, data_dir):
    workdir = tmp_path_factory.mktemp("mro")
    config = mro_config.get_config("tiny")
    config.data_dir = str(data_dir)
    return workdir, mro.train_and_evaluate(config, workdir)


def test_interaction_share_follows_the_structure_of_the_data(results):
    _, out = results
    additive = out["datasets"]["synthetic/additive"]
    xor = out["datasets"]["synthetic/xor"]
    assert additive["interaction_share"] < 0.1
    assert xor["interaction_share"] > 0.5
    assert additive["test"] > 0.9 and xor["test"] > 0.9


def test_emap_agrees_with_the_interaction_share(results):
    _, out = results
    additive = out["datasets"]["synthetic/additive"]
    xor = out["datasets"]["synthetic/xor"]
    assert additive["test"] - additive["emap"] < 0.03  # nothing lost without interactions
    assert xor["emap"] < 0.65  # everything lost


def test_outputs_and_a_rerun_that_reads_the_finished_runs(results, data_dir):
    workdir, out = results
    for name in ("config.json", "metrics.jsonl", "results.json", "plots/emap.png"):
        assert (workdir / name).exists(), name
    assert len(train.read_metrics(workdir / "metrics.jsonl")) == 2
    # the table says its cells are on the 400 test examples EMAP used, not the whole split
    test_size = out["datasets"]["synthetic/xor"]["test_size"]
    assert test_size > 400 and out["datasets"]["synthetic/xor"]["num_examples"] == 400
    assert f"synthetic/xor: the first 400 of {test_size}" in out["table"]
    config = mro_config.get_config("tiny")
    config.data_dir = str(data_dir)
    assert mro.train_and_evaluate(config, workdir) == out


def test_sequence_modalities_are_refused_naming_them():
    # the residual model applied per time step would return [B, T, C] for [B] labels
    rng = np.random.default_rng(0)
    splits = {
        "train": {
            "text": rng.normal(size=(8, 5, 3)),
            "audio": rng.normal(size=(8, 4)),
            "label": np.zeros(8),
        }
    }
    task = _tasks.Task("toy_sequences", ("text", "audio"), splits, num_classes=None)
    config = mro_config.get_config("tiny")
    with pytest.raises(ValueError, match=r"toy_sequences's modalities \{'text': \(5, 3\)\} are"):
        mro.build_model(config, task, seed=0)
