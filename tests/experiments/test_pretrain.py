"""Pre-trained unimodal encoders, frozen or fine-tuned (config.model.encoders)."""

import re
import shutil

import jax
import numpy as np
import pytest
from flax import nnx

from configs import supervised as supervised_config
from experiments import _pretrain, supervised
from mmfuse import train


def _config(mode, dataset="synthetic/additive", kind="intermediate", steps=150, **encoders):
    config = supervised_config.get_config(f"tensor,{dataset}")
    config.model.kind = kind
    config.model.encoders.mode = mode
    config.model.encoders.update(encoders)
    config.train.num_steps = steps
    config.train.eval_every = config.train.checkpoint_every = 50
    config.train.log_every = 50
    config.emap.max_examples = 100
    return config


def _state(module):
    return [np.asarray(x) for x in jax.tree.leaves(nnx.state(module, nnx.Param))]


def _same(a, b):
    return all(np.array_equal(x, y) for x, y in zip(_state(a), _state(b), strict=True))


@pytest.mark.parametrize("mode", ["frozen", "finetune"])
def test_the_fusion_trains_on_the_pretrained_encoders_frozen_or_fine_tuned(mode, tmp_path):
    config = _config(mode, lr_scale=0.5) if mode == "finetune" else _config(mode)
    task, model, loss_fn, fit_kwargs = supervised.run_config(config)
    initial = nnx.clone(model)
    report = _pretrain.pretrain(model, config, task, tmp_path)
    assert set(report["unimodal"]) == set(task.modalities)
    pretrained = nnx.clone(model)
    # pretraining moved the encoders only: the fusion and head keep their initialization
    assert not _same(pretrained.encoders[0], initial.encoders[0])
    assert _same(pretrained.fusion, initial.fusion) and _same(pretrained.head, initial.head)
    result = train.fit(model, loss_fn, train_data=task.splits["train"], **fit_kwargs)
    assert not _same(result.model.fusion, pretrained.fusion)
    for m in range(len(task.modalities)):
        assert _same(result.model.encoders[m], pretrained.encoders[m]) == (mode == "frozen")


def test_unimodal_baselines_are_reported_and_a_rerun_resumes_to_the_same_results(tmp_path):
    # on xor each modality alone is at chance: only the fused model can predict the label
    config = _config("frozen", dataset="synthetic/xor", steps=300)
    results = supervised.train_and_evaluate(config, str(tmp_path))
    encoders = results["encoders"]
    assert encoders["mode"] == "frozen" and encoders["pretrain_steps"] == 300
    for name in ("x1", "x2"):
        assert encoders["unimodal"][name]["test"]["accuracy"] < 0.6, name
        assert (tmp_path / "pretrain" / name / "checkpoints").is_dir()
    assert supervised.train_and_evaluate(config, str(tmp_path)) == results


def test_a_fresh_start_discards_the_previous_pretraining(tmp_path):
    config = _config("frozen", steps=20, pretrain_steps=20)
    supervised.train_and_evaluate(config, str(tmp_path))
    config.model.encoders.pretrain_steps, config.resume = 10, False
    results = supervised.train_and_evaluate(config, str(tmp_path))
    assert {v["steps"] for v in results["encoders"]["unimodal"].values()} == {10}


@pytest.fixture(scope="module")
def source_run(tmp_path_factory):
    """A finished run on synthetic/additive, whose encoders another run can start from."""
    workdir = tmp_path_factory.mktemp("source")
    config = _config("joint", steps=60)
    config.emap.enabled = False
    supervised.train_and_evaluate(config, str(workdir))
    # its selected model, read back the way a resumed run reads it
    task, model, loss_fn, fit_kwargs = supervised.run_config(config)
    result = train.fit(
        model, loss_fn, train_data=task.splits["train"], workdir=workdir, **fit_kwargs
    )
    return workdir, result.model


def test_encoders_are_read_from_another_run_by_modality_name(source_run, tmp_path):
    workdir, source = source_run
    config = _config("frozen", dataset="synthetic/xor", steps=60, init_from=str(workdir))
    config.data.modalities = ("x2", "x1")  # the other order: matched by name
    task, model, _, _ = supervised.run_config(config)
    assert task.modalities == ("x2", "x1")
    assert _same(model.encoders[0], source.encoders[1])
    assert _same(model.encoders[1], source.encoders[0])
    results = supervised.train_and_evaluate(config, str(tmp_path))
    assert results["encoders"] == {
        "mode": "frozen",
        "init_from": str(workdir),
        "source": {"dataset": "synthetic/additive", "modalities": ["x1", "x2"]},
    }
    assert not (tmp_path / "pretrain").exists()


def test_a_source_run_that_does_not_fit_is_named(source_run, tmp_path):
    workdir, _ = source_run
    where = f"model.encoders.init_from={str(workdir)!r}"
    differ = f"{where}: modality 'x1': the branches differ in architecture: "
    cases = [
        ({"encoder_dim": 8}, differ + "encoders/0/layers/1/bias (8,) here, (16,) there;"),
        # the first two layers line up in shape, the third has no counterpart there
        ({"encoder_hidden": (32, 16)}, differ + "encoders/0/layers/2/bias (16,) here, absent"),
        ({"kind": "late"}, f"{where}: its model.kind is 'intermediate', this run's 'late'"),
    ]
    for changes, message in cases:
        config = _config("finetune", init_from=str(workdir))
        config.model.update(changes)
        with pytest.raises(ValueError, match=re.escape(message)):
            supervised.train_and_evaluate(config, str(tmp_path / "never"))
    config = _config("finetune", init_from=str(tmp_path / "nothing"))
    with pytest.raises(ValueError, match=r"not a finished run \(.*config\.json is missing\)"):
        supervised.train_and_evaluate(config, str(tmp_path / "never"))
    config = _config("finetune", dataset="synthetic/xor", init_from=str(workdir))
    config.data.options.widths = (16, 16, 16)
    with pytest.raises(ValueError, match=r"modality x3 is not among its modalities \(x1, x2\)"):
        supervised.train_and_evaluate(config, str(tmp_path / "never"))
    no_checkpoints = tmp_path / "copied"
    no_checkpoints.mkdir()
    for name in ("config.json", "results.json"):
        shutil.copy(workdir / name, no_checkpoints / name)
    config = _config("finetune", init_from=str(no_checkpoints))
    with pytest.raises(ValueError, match="it has no checkpoints/ folder to read its model from"):
        supervised.train_and_evaluate(config, str(tmp_path / "never"))
    assert not (tmp_path / "never").exists() and not (no_checkpoints / "checkpoints").exists()
    # a fresh start in the source's own workdir would delete it first
    config = _config("frozen", init_from=str(workdir))
    config.resume = False
    with pytest.raises(ValueError, match=r"is \(inside\) this run's workdir"):
        supervised.train_and_evaluate(config, str(workdir))
    assert (workdir / "results.json").exists()


def test_late_fusion_pretrains_its_predictors(tmp_path):
    config = _config("finetune", kind="late", steps=100, pretrain_steps=50)
    results = supervised.train_and_evaluate(config, str(tmp_path))
    unimodal = results["encoders"]["unimodal"]
    assert {k: v["steps"] for k, v in unimodal.items()} == {"x1": 50, "x2": 50}
    # synthetic/additive: each modality alone predicts the label above chance
    assert all(v["test"]["accuracy"] > 0.6 for v in unimodal.values())


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"mode": "fixed"}, "model.encoders.mode: unknown 'fixed'; modes: joint, frozen, finetune"),
        (
            {"mode": "joint", "pretrain_steps": 10},
            "model.encoders.pretrain_steps, lr_scale and init_from are used by mode 'frozen' "
            "or 'finetune' only",
        ),
        (
            {"mode": "frozen", "pretrain_steps": 10, "init_from": "/runs/elsewhere"},
            "model.encoders.pretrain_steps: the branches come from model.encoders.init_from "
            "(/runs/elsewhere), nothing is pre-trained here",
        ),
        (
            {"mode": "frozen", "lr_scale": 0.1},
            "model.encoders.lr_scale is used by mode 'finetune' only, not 'frozen'",
        ),
        (
            {"mode": "finetune", "lr_scale": 0.0},
            "model.encoders.lr_scale must be finite and > 0 (mode 'frozen' freezes), got 0.0",
        ),
        (
            {"mode": "frozen", "pretrain_steps": 0},
            "config.model.encoders.pretrain_steps must be an int >= 1, got 0",
        ),
        (
            {"mode": "frozen", "kind": "early"},
            "model.encoders.mode='frozen' needs per-modality branches: model.kind "
            "'intermediate' (encoders) or 'late' (predictors), not 'early'",
        ),
        (
            {"mode": "frozen", "kind": "late"},
            "late_combine='mean' leaves nothing to train; use late_combine='weighted'",
        ),
        (  # the run's own 150 steps would fit the warm-up, the pretraining's 20 do not
            {"mode": "frozen", "pretrain_steps": 20, "optim": ("warmup_cosine", 50)},
            "pretraining the branches for 20 steps: optim.warmup_steps=50 must be smaller "
            "than the 20 steps the schedule spans",
        ),
    ],
)
def test_bad_encoder_settings_are_refused_before_the_workdir(changes, message):
    changes = dict(changes)
    schedule = changes.pop("optim", None)
    config = _config(changes.pop("mode"), kind=changes.pop("kind", "intermediate"), **changes)
    if schedule is not None:
        config.optim.schedule, config.optim.warmup_steps = schedule
    with pytest.raises(ValueError, match=re.escape(message)):
        supervised.train_and_evaluate(config, "/nonexistent/never-written")
