"""Trainers of many runs check their whole config before they touch the workdir or train."""

import json
import re

import pytest

from configs import fusion_zoo as zoo_config
from configs import linear_case as linear_config
from configs import mro as mro_config
from configs import pid as pid_config
from configs import quickstart
from configs import supervised as supervised_config
from experiments import emap_table, fusion_zoo, linear_case, mro, pid, supervised


def _emap_table():
    config = quickstart.get_config("tiny")
    config.extra_models = [
        *config.extra_models,
        {"name": "lr", "kind": "intermediate", "fusion": "low_rank_tensor"},
    ]
    config.extra_models[-1]["fusion_options"] = {"rank": 0}
    return config


def _fusion_zoo():
    config = zoo_config.get_config("quick")
    config.datasets = ("synthetic/xor", "synthetic/additive:x1+x3")  # the last one is bad
    return config


def _pid():
    config = pid_config.get_config("tiny")
    config.model.fusion_options.tensor = {"append_one": "middle"}
    return config


def _mro():
    config = mro_config.get_config("tiny")
    config.model.max_order = 3  # its datasets have two modalities
    return config


def _linear_case():
    config = linear_config.get_config("quick")
    config.model.tensor_append = "middle"
    return config


CASES = {
    "emap_table": (
        emap_table,
        _emap_table,
        "model 'lr' on synthetic/xor: low_rank_tensor: rank must be a positive int, got 0",
    ),
    "fusion_zoo": (fusion_zoo, _fusion_zoo, "synthetic/additive: no modality x3"),
    "pid": (pid, _pid, "model 'tensor' on synthetic/xor: tensor: append_one='middle'"),
    "mro": (
        mro,
        _mro,
        "the model on synthetic/additive: ResidualFusion: max_order must be in [1, M = 2], got 3",
    ),
    "linear_case": (
        linear_case,
        _linear_case,
        "config.model.tensor_append: tensor: append_one='middle' is not one of",
    ),
}


def _refused_before_the_previous_run_is_discarded(name, trainer, config, message, tmp_path):
    config.resume = False  # would discard what the workdir holds
    previous = {"trainer": name, "seed": 7}
    (tmp_path / "config.json").write_text(json.dumps(previous))
    (tmp_path / "results.json").write_text("{}")
    with pytest.raises(ValueError, match=re.escape(message)):
        trainer.train_and_evaluate(config, str(tmp_path))
    assert json.loads((tmp_path / "config.json").read_text()) == previous
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "results.json"]


@pytest.mark.parametrize("name", CASES)
def test_a_bad_setting_of_any_run_fails_before_the_previous_run_is_discarded(name, tmp_path):
    trainer, make_config, message = CASES[name]
    _refused_before_the_previous_run_is_discarded(name, trainer, make_config(), message, tmp_path)


TRAINERS = {
    "supervised": (supervised, supervised_config.get_config),
    "emap_table": (emap_table, lambda: quickstart.get_config("tiny")),
    "fusion_zoo": (fusion_zoo, lambda: zoo_config.get_config("quick")),
    "pid": (pid, lambda: pid_config.get_config("tiny")),
    "mro": (mro, lambda: mro_config.get_config("tiny")),
    "linear_case": (linear_case, lambda: linear_config.get_config("quick")),
}


@pytest.mark.parametrize("name", TRAINERS)
def test_a_train_loop_setting_is_checked_before_the_previous_run_is_discarded(name, tmp_path):
    # found by the train loop's own checks, which every trainer runs before the workdir
    trainer, make_config = TRAINERS[name]
    config = make_config()
    config.train.checkpoint_every = 0
    message = "checkpoint_every must be an integer >= 1 or None, got 0"
    _refused_before_the_previous_run_is_discarded(name, trainer, config, message, tmp_path)


SEEDS = {  # a seed each trainer reads, set out of range
    "supervised": ("seed", -1, "config.seed must be an int in [0, 2**32), got -1"),
    "emap_table": ("seeds", (0, 2**32), "config.seeds[1] must be an int in [0, 2**32), got"),
    "fusion_zoo": ("seeds", (-3,), "config.seeds[0] must be an int in [0, 2**32), got -3"),
    "pid": ("seeds", (1.5,), "config.seeds[0] must be an int in [0, 2**32), got 1.5"),
    "mro": ("seeds", (0, -1), "config.seeds[1] must be an int in [0, 2**32), got -1"),
    "linear_case": ("seed", -2, "config.seed must be an int in [0, 2**32), got -2"),
}


@pytest.mark.parametrize("name", TRAINERS)
def test_a_seed_out_of_range_is_named_before_the_previous_run_is_discarded(name, tmp_path):
    # numpy refuses negative seeds only once training starts; jax wraps 2**32 to 0
    trainer, make_config = TRAINERS[name]
    config = make_config()
    key, value, message = SEEDS[name]
    with config.ignore_type():
        config[key] = value
    _refused_before_the_previous_run_is_discarded(name, trainer, config, message, tmp_path)


def test_dataset_seeds_are_checked_too():
    config = linear_config.get_config("quick")
    config.data.seeds = (0, -1)
    with pytest.raises(ValueError, match=re.escape("config.data.seeds[1] must be an int in")):
        linear_case.train_and_evaluate(config, "/nonexistent/never-written")


def _with(**changes):
    config = quickstart.get_config("tiny")
    for key, value in changes.items():
        config[key] = value
    return config


@pytest.mark.parametrize(
    "config, message",
    [
        (
            _with(datasets=[{"name": "synthetic/xor", "modalites": ("x1", "x2")}]),
            "config.datasets: {'name': 'synthetic/xor', 'modalites': ('x1', 'x2')} has unknown "
            "key(s) modalites; keys: name, options, modalities, label, standardize",
        ),
        (
            _with(datasets=[{"name": "synthetic/xor"}, {"name": "synthetic/xor"}]),
            "config.datasets: 'synthetic/xor' names more than one entry; give each a 'label'",
        ),
        (
            _with(extra_models=[{"name": "additive", "kind": "raw", "fusion": "additive"}]),
            "config.extra_models: 'additive' names more than one entry; give each a 'name'",
        ),
        (
            _with(extra_models=[{"name": "gated", "fusion": "gated"}]),
            "config.extra_models: {'name': 'gated', 'fusion': 'gated'} has no 'kind'",
        ),
    ],
    ids=["unknown key", "same label", "built-in row name", "no kind"],
)
def test_table_entries_are_checked_by_name(config, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        emap_table.check_config(config)


def test_zoo_options_of_an_operator_it_does_not_know_are_refused():
    config = zoo_config.get_config("quick")
    config.model.fusion_options.tensr = {"append_one": "first"}
    with pytest.raises(ValueError, match="fusion_options: tensr is no fusion operator"):
        fusion_zoo.train_and_evaluate(config, "/nonexistent/never-written")


def test_pid_refuses_a_dataset_listed_twice():
    config = pid_config.get_config("tiny")
    config.datasets = ["synthetic/xor", "synthetic/xor"]
    with pytest.raises(ValueError, match=r"config.datasets: listed more than once: synthetic/xor"):
        pid.train_and_evaluate(config, "/nonexistent/never-written")


def test_linear_case_refuses_a_repeated_dataset_seed():
    config = linear_config.get_config("quick")
    config.data.seeds = (0, 1, 0)
    with pytest.raises(ValueError, match=r"seed is listed more than once in \(0, 1, 0\)"):
        linear_case.train_and_evaluate(config, "/nonexistent/never-written")


def _changed(make_config, **changes):
    def make():
        config = make_config()
        for key, value in changes.items():
            *path, last = key.split(".")
            section = config
            for part in path:
                section = section[part]
            with section.ignore_type():
                section[last] = value
        return config

    return make


SMALL = {"data.name": "synthetic/xor", "data.options.sizes": (64, 16, 16)}
LATE_CHECKS = {  # settings used only after training (or the first runs), checked first
    "mro penalty": (
        mro,
        _changed(lambda: mro_config.get_config("tiny"), penalty=-1.0),
        "config.penalty must be a finite number >= 0, got -1.0",
    ),
    "pid split": (
        pid,
        _changed(lambda: pid_config.get_config("tiny"), **{"pid.split": "tran"}),
        "config.pid.split='tran' is not one of train, validation, test",
    ),
    "pid clusters": (
        pid,
        _changed(lambda: pid_config.get_config("tiny"), **{"pid.num_clusters": 0}),
        "config.pid.num_clusters must be an int >= 1, got 0",
    ),
    "supervised emap of one modality": (
        supervised,
        _changed(supervised_config.get_config, **SMALL, **{"data.modalities": ("x1",)}),
        "EMAP measures interactions between modalities, but the run has one (x1); set "
        "--config.emap.enabled=False",
    ),
    "supervised unused emap samples": (
        supervised,
        _changed(supervised_config.get_config, **{"emap.enabled": False, "emap.num_samples": 5}),
        "config.emap.num_samples=5 is unused: config.emap.enabled is False",
    ),
    "supervised unused late_combine": (
        supervised,
        _changed(supervised_config.get_config, **{"model.late_combine": "weighted"}),
        "config.model.late_combine='weighted' is unused: only model.kind='late'",
    ),
    "zoo dataset without validation": (
        fusion_zoo,
        _changed(lambda: zoo_config.get_config("quick"), datasets=("book_reviews",)),
        "book_reviews: the trainers train on train, pick the best step on validation and "
        "report test, but book_reviews has only train",
    ),
    "emap_table dataset without validation": (
        emap_table,
        _changed(lambda: quickstart.get_config("tiny"), datasets=[{"name": "book_reviews"}]),
        "book_reviews: the trainers train on train",
    ),
    "linear_case one modality": (
        linear_case,
        _changed(lambda: linear_config.get_config("quick"), **{"data.modalities": ("smiling",)}),
        "config.data.modalities must name the two modalities (x_A, x_B) of the lecture's "
        "regressions, got ('smiling',)",
    ),
}


@pytest.mark.parametrize("case", LATE_CHECKS)
def test_a_setting_used_late_is_checked_before_the_previous_run_is_discarded(case, tmp_path):
    trainer, make_config, message = LATE_CHECKS[case]
    name = trainer.__name__.rsplit(".", 1)[-1]
    _refused_before_the_previous_run_is_discarded(name, trainer, make_config(), message, tmp_path)
