"""Config sections unpacked into library calls."""

import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from configs import supervised
from experiments import _evaluation, _models, _tasks, _training
from mmfuse import fusion, models
from tests.experiments.standardize_checks import assert_standardized, toy_task
from tests.jaxprs import dot_generals, operand_dtypes


def _toy_task(num_train=200):
    splits = {"train": {"label": np.zeros(num_train, np.int32)}, "validation": {}}
    return _tasks.Task("toy", ("a", "b"), splits, num_classes=2)


def _fit_kwargs(task=None, **mesh):
    config = supervised.get_config()
    config.mesh.update(mesh)
    model = models.MLP(3, (), 2, rngs=nnx.Rngs(0))
    return _training.fit_arguments(config, task or _toy_task(), model, seed=0)[1]


def test_fit_arguments_are_checked_against_the_training_split():
    assert _fit_kwargs(_toy_task(128))["batch_size"] == 128  # supervised.py's batch
    with pytest.raises(ValueError, match=r"batch_size 128 is larger than the training split"):
        _fit_kwargs(_toy_task(100))


def test_an_empty_mesh_shape_trains_on_the_default_device():
    assert "mesh" not in _fit_kwargs()
    # a setting the run would ignore is an error
    with pytest.raises(ValueError, match=r"config.mesh.param_axis is set but config.mesh.shape"):
        _fit_kwargs(param_axis="model")
    with pytest.raises(ValueError, match=r"config.mesh.axes is set but config.mesh.shape is empty"):
        _fit_kwargs(axes=("batch",))


def test_a_mesh_shape_builds_the_mesh_and_names_its_axes():
    kwargs = _fit_kwargs(shape=(1, 1), axes=("data", "model"), param_axis="model")
    assert kwargs["mesh"].axis_names == ("data", "model")
    assert kwargs["data_axis"] == "data" and kwargs["param_axis"] == "model"
    # whatever the order of the axes, batches go over the one the parameters do not use
    kwargs = _fit_kwargs(shape=(1, 1), axes=("model", "data"), param_axis="model")
    assert kwargs["data_axis"] == "data" and kwargs["param_axis"] == "model"
    kwargs = _fit_kwargs(shape=(1,), axes=("devices",), param_axis="devices")
    assert kwargs["data_axis"] == kwargs["param_axis"] == "devices"  # one axis: both


def test_a_mesh_larger_than_the_machine_is_a_clear_error():
    with pytest.raises(ValueError, match=r"mesh shape \(64,\) needs 64 devices, have 1"):
        _fit_kwargs(shape=(64,))


def test_every_dataset_option_is_in_the_config_unset_and_only_changed_ones_are_passed(
    monkeypatch,
):
    from mmfuse import data

    config = supervised.get_config("low_rank_tensor,synthetic/additive")
    assert config.model.fusion == "low_rank_tensor" and config.data.name == "synthetic/additive"
    options = config.data.options.to_dict()
    assert set(options) == set(data.options("synthetic/additive"))
    assert all(v is None for v in options.values())  # None: the dataset's default
    config.data.options.noise = 0.3  # what --config.data.options.noise=0.3 does
    config.data.options.seed = 0  # set, but to the default: the preset cache is kept
    seen = {}
    monkeypatch.setattr(_tasks, "load_task", lambda name, **kwargs: seen.update(kwargs))
    _tasks.task_from_config(config.data, ("train",))
    assert seen["options"] == {"noise": 0.3}


def test_options_set_for_another_dataset_are_a_clear_error():
    config = supervised.get_config()  # synthetic/xor's options
    config.data.name = "digits_halves"
    config.data.options.latent = "gaussian"
    config.data.options.noise = 0.5
    with pytest.raises(ValueError, match=r"sets latent, noise, not options of digits_halves"):
        _tasks.task_from_config(config.data, ("train",))


@pytest.mark.parametrize(
    ("variant", "name", "set_here", "passed"),
    [
        ("tensor", "synthetic/additive", {}, {}),  # not xor's options under additive's name
        ("tensor", "synthetic/additive", {"noise": 0.3}, {"noise": 0.3}),
        ("tensor", "digits_halves", {}, {}),
        ("tensor,cmu_mosi", "cmu_mosi/binary", {}, {}),  # label stays the name's own
        # xor's default latent, but set: synergy's default (gaussian) must not win
        ("tensor", "synthetic/synergy", {"latent": "bits"}, {"latent": "bits"}),
        ("tensor", "synthetic/synergy", {"latent": "gaussian"}, {}),
    ],
)
def test_another_dataset_name_gets_its_own_defaults(monkeypatch, variant, name, set_here, passed):
    config = supervised.get_config(variant)
    config.data.name = name  # what --config.data.name=... does
    config.data.options.update(set_here)
    seen = {}
    monkeypatch.setattr(_tasks, "load_task", lambda name, **kwargs: seen.update(kwargs, name=name))
    _tasks.task_from_config(config.data, ("train",))
    assert seen["name"] == name and seen["options"] == passed


def test_uci_mfeat_is_standardized_unless_the_config_says_otherwise(monkeypatch):
    toy = toy_task()
    monkeypatch.setattr(_tasks, "load_task", lambda name, **kwargs: toy)
    for variant, name, standardize, expected in [
        ("tensor,uci_mfeat", "uci_mfeat", None, True),
        ("tensor", "uci_mfeat", None, True),  # also when named by --config.data.name
        ("tensor,uci_mfeat", "uci_mfeat", False, False),
        ("tensor", "synthetic/xor", None, False),
        ("tensor", "synthetic/xor", True, True),
    ]:
        config = supervised.get_config(variant)
        config.data.name, config.data.standardize = name, standardize
        task = _tasks.task_from_config(config.data, ("train", "test"))
        assert (task is not toy) == expected, (variant, name, standardize)


@pytest.mark.parametrize("standardize", [False, True])
def test_standardize_z_scores_every_split_by_the_train_statistics(monkeypatch, standardize):
    toy = toy_task()
    monkeypatch.setattr(_tasks, "load_task", lambda name, **kwargs: toy)
    config = supervised.get_config()
    config.data.standardize = standardize  # what --config.data.standardize=... sets
    task = _tasks.task_from_config(config.data, ("train", "test"))
    if standardize:
        assert_standardized(task, toy)
    else:
        assert task.splits["train"]["a"] is toy.splits["train"]["a"]


@pytest.mark.parametrize("kind", ["intermediate", "early", "late", "raw"])
def test_model_compute_dtype_reaches_every_matmul(kind):
    shapes = [(6,), (4,)] if kind in ("early", "raw") else [(6,), (5, 4)]
    xs = [np.ones((3, *s), np.float32) for s in shapes]
    task = _tasks.Task(
        name="t",
        modalities=("a", "b"),
        splits={"train": {"a": xs[0], "b": xs[1], "label": np.array([0, 1, 0])}},
        num_classes=2,
    )
    config = supervised.get_config()
    config.model.kind = kind
    config.model.fusion = "low_rank_tensor"
    config.model.compute_dtype = "bfloat16"  # as --config.model.compute_dtype=bfloat16 sets it
    model = _models.model_from_config(config.model, task, seed=0)
    found = dot_generals(jax.make_jaxpr(model)(xs).jaxpr)
    assert found and operand_dtypes(found) == {"bfloat16"}
    leaves = jax.tree.leaves(nnx.state(model, nnx.Param))
    assert {str(leaf.dtype) for leaf in leaves} == {"float32"}


def _random_task(num_modalities: int, n: int) -> _tasks.Task:
    rng = np.random.default_rng(0)
    names = tuple(f"m{i}" for i in range(num_modalities))
    split = {m: rng.normal(size=(n, 3)).astype(np.float32) for m in names}
    split["label"] = rng.integers(0, 2, n)
    return _tasks.Task("random", names, {"test": split}, num_classes=2)


def test_emap_scores_is_exact_where_affordable_and_monte_carlo_beyond():
    # six views of 40 examples: 40^6 = 4.1e9 head evaluations would be exact EMAP's cost
    task = _random_task(6, 40)
    model = _models.model_from_config(supervised.get_config("additive").model, task, seed=0)
    scores = _evaluation.emap_scores(model, task)
    assert scores["num_samples"] == _evaluation.EMAP_SAMPLES
    assert 0.0 <= scores["projected"] <= 1.0 and len(scores["marginals"]) == 6
    assert _evaluation.emap_scores(model, task, max_examples=3)["num_samples"] is None  # 3^6 pairs


def test_emap_scores_monte_carlo_estimates_the_exact_projection():
    task = _random_task(2, 30)
    task = _tasks.Task(task.name, task.modalities, task.splits, num_classes=None)  # MSE
    model = _models.model_from_config(supervised.get_config("tensor").model, task, seed=0)
    exact = _evaluation.emap_scores(model, task)
    sampled = _evaluation.emap_scores(model, task, num_samples=3000, seed=1)
    assert exact["num_samples"] is None and sampled["num_samples"] == 3000
    assert sampled["projected"] == pytest.approx(exact["projected"], rel=0.05)
    assert sampled["projected"] != exact["projected"]  # it did sample


@pytest.mark.parametrize("kind", ["intermediate", "raw"])
@pytest.mark.parametrize("estimator", ["gumbel", "reinforce"])
def test_hard_gates_learn_their_gate_with_either_estimator(kind, estimator):
    task = _random_task(2, 64)
    config = supervised.get_config("hard_gated")
    config.model.kind = kind
    config.model.fusion_options = {"estimator": estimator}
    model = _models.model_from_config(config.model, task, seed=0)
    assert _models.is_stochastic(model)
    loss_fn, _ = _training.make_objective(task, stochastic=True)
    batch = task.splits["test"]
    graphdef, params = nnx.split(model)

    def loss(params, key):
        return loss_fn(nnx.merge(graphdef, params), batch, key)

    grads = nnx.State(jax.grad(loss)(params, jax.random.key(0)))
    gate = [v for path, v in jax.tree_util.tree_leaves_with_path(grads) if "gate" in str(path)]
    assert gate and all(np.all(np.isfinite(g)) for g in gate)
    assert max(float(np.max(np.abs(g))) for g in gate) > 1e-6
    # the loss reported is the task's on the sampled choices, whatever the estimator
    xs = tuple(batch[m] for m in task.modalities)
    sampled = model(xs, key=jax.random.key(0))
    want = optax.softmax_cross_entropy_with_integer_labels(sampled, batch["label"]).mean()
    assert float(loss(params, jax.random.key(0))) == pytest.approx(float(want), rel=1e-6)


def test_every_operator_option_is_in_the_config_unset():
    from configs._sections import fusion_options_section

    for name in fusion.names():
        config = supervised.get_config(name)
        section = fusion_options_section(name)
        assert set(section) == set(fusion.options(name)) - {"kernel_init", "compute_dtype"}
        assert _models.fusion_options(config.model) == {}  # the operator's own defaults


def test_a_set_operator_option_reaches_the_operator():
    task = _random_task(2, 8)
    config = supervised.get_config("low_rank_tensor")
    config.model.fusion_options.rank = 7  # as --config.model.fusion_options.rank=7 sets it
    assert _models.fusion_options(config.model) == {"rank": 7}
    model = _models.model_from_config(config.model, task, seed=0)
    assert {f.shape[0] for f in model.fusion.functional_params()["factors"]} == {7}


def test_load_task_takes_the_declared_class_count_not_the_largest_label(tmp_path):
    from tests.data.helpers import aligned_pickle, write_pickle

    content = aligned_pickle(seed=1)
    for split in content.values():  # no score rounds to 3, so class 6 never occurs
        split["labels"] = np.clip(split["labels"], -3.0, 2.0)
    write_pickle(tmp_path / "downloads" / "manual", content)
    task = _tasks.load_task("cmu_mosi/seven_class", data_dir=str(tmp_path))
    labels = np.concatenate([task.splits[s]["label"] for s in task.splits])
    assert labels.max() == 5
    assert task.num_classes == task.num_outputs == 7
    regression = _tasks.load_task("cmu_mosi", data_dir=str(tmp_path))
    assert regression.num_classes is None and regression.num_outputs == 1


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"weight_decay": 0.5}, r"optim.weight_decay=0.5 is used by optim.name='adamw' only"),
        ({"warmup_steps": 15}, r"optim.warmup_steps=15 is used by .*'warmup_cosine' only"),
        ({"name": "sgd", "weight_decay": 0.1}, r"adamw' only, not 'sgd'"),
        # a negative rate or clipping norm would train by gradient ascent
        ({"learning_rate": -3e-3}, r"optim.learning_rate must be finite and > 0, got -0.003"),
        ({"learning_rate": 0.0}, r"optim.learning_rate must be finite and > 0, got 0.0"),
        ({"clip_norm": -1.0}, r"optim.clip_norm must be finite and >= 0, got -1.0"),
        ({"clip_norm": float("nan")}, r"optim.clip_norm must be finite and >= 0, got nan"),
        ({"name": "adamw", "weight_decay": -0.1}, r"optim.weight_decay must be .* got -0.1"),
        (
            {"schedule": "warmup_cosine", "warmup_steps": -5},
            r"optim.warmup_steps must be finite and >= 0, got -5",
        ),
    ],
)
def test_an_optimizer_setting_that_would_be_ignored_or_misused_is_an_error(settings, message):
    config = supervised.get_config()
    config.optim.update(settings)
    with pytest.raises(ValueError, match=message):
        _training.optimizer_from_config(config.optim, 100)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("max_examples", 1, r"config.emap.max_examples must be an int >= 2, got 1"),
        ("num_samples", 0, r"config.emap.num_samples must be an int >= 1, got 0"),
    ],
)
def test_emap_settings_are_checked_before_training(key, value, message, tmp_path):
    from experiments import supervised as trainer

    config = supervised.get_config()
    config.emap[key] = value
    with pytest.raises(ValueError, match=message):
        trainer.train_and_evaluate(config, str(tmp_path))
    assert not any(tmp_path.iterdir())  # nothing trained, nothing written


def test_weight_decay_and_warmup_take_effect_where_they_apply():
    config = supervised.get_config()
    config.optim.update(name="adamw", weight_decay=0.5, schedule="warmup_cosine", warmup_steps=10)
    params = {"w": jnp.ones(3)}
    opt = _training.optimizer_from_config(config.optim, 100)
    updates, _ = opt.update({"w": jnp.zeros(3)}, opt.init(params), params)
    np.testing.assert_array_equal(updates["w"], 0.0)  # warm-up starts at learning rate 0
    state = opt.init(params)
    for _ in range(5):
        updates, state = opt.update({"w": jnp.zeros(3)}, state, params)
    assert float(updates["w"][0]) < 0  # decoupled weight decay with zero gradients


def test_supervised_needs_three_splits_and_says_which_the_dataset_has():
    from experiments import supervised as trainer
    from mmfuse import data

    config = supervised.get_config("tensor,book_reviews")
    with pytest.raises(ValueError, match=r"report test, but book_reviews has only train$"):
        trainer.run_config(config)
    assert data.splits("digits_halves") == ("train", "validation", "test")


def test_sequence_encoders_skip_the_zero_steps_that_pad_sequences():
    encoder = _models._encoder((6, 5), (), 4, nnx.Rngs(0), None)
    encoder.inputs.bias[...] = jnp.full_like(encoder.inputs.bias[...], 0.1)  # as after training
    x = jax.random.normal(jax.random.key(0), (2, 3, 5))
    padded = jnp.concatenate([jnp.zeros((2, 3, 5)), x], axis=1)  # left-padded as cmu_mosi
    np.testing.assert_allclose(encoder(padded), encoder(x), rtol=1e-6, atol=1e-6)


def test_standardizing_sequences_leaves_padding_zero_and_out_of_the_statistics():
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, size=(50, 6, 4)).astype(np.float32)
    lengths = rng.integers(1, 7, 50)
    for i, n in enumerate(lengths):
        x[i, : 6 - n] = 0.0  # left padding
    splits = {s: {"a": x, "label": np.zeros(50, np.int64)} for s in ("train", "test")}
    task = _tasks.standardized(_tasks.Task("seq", ("a",), splits, num_classes=2))
    z = task.splits["test"]["a"]
    real = np.any(x != 0, axis=-1)  # [N, T]
    assert not z[~real].any()  # padding stays padding
    np.testing.assert_allclose(z[real].mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(z[real].std(0), 1, rtol=1e-5)


def test_a_feature_constant_in_the_train_split_is_centred_not_blown_up():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1400, 3)).astype(np.float32)
    x[:, 1] = 0.7  # its float32 standard deviation is rounding error, about 6e-8
    test = x[:4].copy()
    test[0, 1] = 0.8
    labels = np.zeros(1400, np.int64)
    splits = {"train": {"a": x, "label": labels}, "test": {"a": test, "label": labels[:4]}}
    task = _tasks.standardized(_tasks.Task("toy", ("a",), splits, num_classes=2))
    assert not task.splits["train"]["a"][:, 1].any()
    np.testing.assert_allclose(task.splits["test"]["a"][:, 1], [0.1, 0, 0, 0], atol=1e-6)
    np.testing.assert_allclose(task.splits["train"]["a"][:, 0].std(), 1, rtol=1e-5)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("fused_dim", -1, "config.model.fused_dim must be an int >= 1, got -1"),
        ("encoder_dim", 2.0, "config.model.encoder_dim must be an int >= 1, got 2.0"),
        ("head_hidden", (32, 0), "config.model.head_hidden[1] must be an int >= 1, got 0"),
    ],
)
def test_model_widths_are_named_by_their_config_key(key, value, message):
    from experiments import supervised as trainer

    config = supervised.get_config("tensor")
    with config.ignore_type():
        config.model[key] = value
    with pytest.raises(ValueError, match=re.escape(message)):
        trainer.run_config(config)


def test_a_modality_listed_twice_is_refused_before_loading(monkeypatch):
    monkeypatch.setattr(_tasks.data, "load", lambda *a, **k: pytest.fail("loaded"))
    with pytest.raises(ValueError, match=r"\('x1', 'x1'\) list x1 more than once"):
        _tasks.load_task("synthetic/xor", modalities=("x1", "x1"))


def test_a_dataset_option_takes_any_form_the_dataset_accepts(monkeypatch):
    config = supervised.get_config("tensor,synthetic/additive")
    config.data.options.uniqueness = (1.0, 0.0)  # a float by default: one weight for all
    seen = {}
    monkeypatch.setattr(_tasks, "load_task", lambda name, **kwargs: seen.update(kwargs))
    _tasks.task_from_config(config.data, ("train",))
    assert seen["options"] == {"uniqueness": (1.0, 0.0)}


def test_a_run_killed_after_its_last_checkpoint_keeps_its_step_time(tmp_path):
    from experiments import supervised as trainer
    from mmfuse import train

    config = supervised.get_config("additive")
    config.train.update(num_steps=40, eval_every=20, checkpoint_every=20, log_every=10)
    config.emap.enabled = False
    trainer.train_and_evaluate(config, str(tmp_path))
    metrics = tmp_path / "metrics.jsonl"
    records = train.read_metrics(metrics)
    (timed,) = [r for r in records if "train/step_seconds" in r]
    assert timed["step"] == 40 and timed["train/step_seconds"] > 0
    # killed after the final checkpoint, before the step time was written
    metrics.write_text("".join(json.dumps(r) + "\n" for r in records if r is not timed))
    (tmp_path / "results.json").unlink()
    trainer.train_and_evaluate(config, str(tmp_path))
    assert train.read_metrics(metrics) == records  # the saved step time, written once
    trainer.train_and_evaluate(config, str(tmp_path))  # a rerun adds nothing
    assert train.read_metrics(metrics) == records


def test_late_fusion_on_sequences_reads_out_linearly_beyond_the_grus_range():
    # a GRU's pooled state is bounded by tanh: a sequence predictor needs a readout, or
    # no regression target beyond ±1 (CMU-MOSI's are in [-3, 3]) could be fitted
    model = _models.build_model("late", ((5, 3), (4,)), 1, seed=0)
    sequence_predictor = model.predictors[0]
    readout = sequence_predictor.readout.layers[-1]
    readout.kernel[...] = jnp.zeros_like(readout.kernel[...])
    readout.bias[...] = jnp.full_like(readout.bias[...], 3.0)
    xs = (jax.random.normal(jax.random.key(0), (6, 5, 3)), jnp.zeros((6, 4)))
    vector_alone = model.predictors[1](xs[1])  # [6, 1]
    np.testing.assert_allclose(model(xs), (3.0 + vector_alone) / 2, rtol=1e-6)  # the mean
    assert sequence_predictor.in_dim == 3 and sequence_predictor.input_rank == 2


def test_fusion_settings_a_model_kind_cannot_use_are_named():
    config = supervised.get_config("low_rank_tensor,synthetic/xor")
    task = toy_task()
    config.model.kind = "late"
    config.model.fusion_options.rank = 8  # late fusion has no operator to take it
    with pytest.raises(ValueError, match=r"fusion_options \{'rank': 8\} are unused: .*'late'"):
        _models.model_from_config(config.model, task, seed=0)
    config.model.kind = "early"  # always the nonlinear operator
    with pytest.raises(ValueError, match=r"'early' fuses with the nonlinear operator.*rank"):
        _models.model_from_config(config.model, task, seed=0)
