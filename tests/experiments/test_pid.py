"""The PID experiment: dataset PID per synthetic kind, model PID and its agreement."""

import numpy as np
import pytest

from configs import pid as pid_config
from experiments import pid


@pytest.fixture(scope="module")
def results(tmp_path_factory, data_dir):
    workdir = tmp_path_factory.mktemp("pid")
    config = pid_config.get_config("tiny")
    config.data.data_dir = str(data_dir)
    return workdir, pid.train_and_evaluate(config, workdir)


def test_dataset_pid_shows_the_interaction_each_set_was_built_for(results):
    _, out = results
    xor = out["datasets"]["synthetic/xor"]["dataset"]
    uniqueness = out["datasets"]["synthetic/uniqueness"]["dataset"]
    assert xor["synergy"] > 5 * max(xor["redundancy"], xor["unique_1"], xor["unique_2"])
    assert uniqueness["unique_1"] > 3 * max(
        uniqueness["redundancy"], uniqueness["unique_2"], uniqueness["synergy"]
    )


def test_models_that_cannot_express_xor_disagree_with_its_pid_and_are_wrong(results):
    workdir, out = results
    xor = out["datasets"]["synthetic/xor"]["models"]
    assert xor["tensor"]["agreement"] > 0.8 and xor["tensor"]["test"] > 0.9
    for weak in ("late", "raw:additive"):
        assert xor[weak]["agreement"] < 0.5 and xor[weak]["test"] < 0.6
    assert out["correlation"] > 0.5
    for name in ("results.json", "metrics.jsonl", "plots/dataset_pid.png", "plots/agreement.png"):
        assert (workdir / name).exists(), name


def test_agreement_is_one_for_equal_decompositions_and_zero_for_disjoint_ones():
    a = {"redundancy": 0.2, "unique_1": 0.0, "unique_2": 0.0, "synergy": 0.5}
    assert pid.agreement(a, a) == 1.0
    b = {"redundancy": 0.0, "unique_1": 0.7, "unique_2": 0.0, "synergy": 0.0}
    assert pid.agreement(a, b) == pytest.approx(0.0)


def test_a_zoo_workdir_is_reused_only_with_the_same_training_settings(tmp_path):
    from configs import fusion_zoo as zoo_config
    from mmfuse import train

    zoo = tmp_path / "zoo"
    config = pid_config.get_config("tiny")
    config.zoo_workdir = str(zoo)
    with pytest.raises(ValueError, match="holds no run"):
        pid.check_zoo_workdir(config)
    zoo_run = zoo_config.get_config("quick")
    zoo_run.data.data_dir = "/elsewhere"  # where the data lives does not matter
    train.write_json(zoo / "config.json", zoo_run.to_dict())
    pid.check_zoo_workdir(config)  # pid's tiny models are the quick zoo's
    config.train.num_steps = 400
    config.model.encoder_dim = 8
    differences = r"encoder_dim: 16 there, 8 here; train\.num_steps: 200 there, 400 here"
    with pytest.raises(ValueError, match=differences):
        pid.check_zoo_workdir(config)


@pytest.mark.parametrize(
    "spec, message",
    [
        (
            "uci_mfeat",
            r"'uci_mfeat' has 3 modalities \(fou, kar, pix\); .* e\.g\. 'uci_mfeat:fou\+kar'",
        ),
        (
            "uci_mfeat:fou",
            r"'uci_mfeat:fou' has 1 modality \(fou\); PID is of two: name two of them$",
        ),
    ],
)
def test_a_dataset_without_exactly_two_modalities_is_named_with_the_fix(spec, message, monkeypatch):
    from experiments import _tasks, fusion_zoo

    widths = {"fou": 76, "kar": 64, "pix": 240}

    def probe(dataset, config, splits):
        kept = dataset.modalities or tuple(widths)
        arrays = {m: np.zeros((1, widths[m]), np.float32) for m in kept}
        return _tasks.Task(dataset.spec, kept, {splits[0]: arrays}, num_classes=10)

    monkeypatch.setattr(fusion_zoo, "load_dataset", probe)
    config = pid_config.get_config("tiny")
    config.datasets = [spec]
    with pytest.raises(ValueError, match=message):
        pid.check_config(config)
