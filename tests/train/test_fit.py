"""mmfuse.train.fit: exact resume from any checkpoint, NaN handling, early stopping."""

import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from mmfuse import models
from mmfuse.train import (
    Checkpointer,
    EpochSampler,
    NonFiniteLossError,
    check_fit_settings,
    fit,
    make_mesh,
    read_metrics,
)

N, D = 96, 3


def make_data(seed=0, nan_at=None):
    rng = np.random.default_rng(seed)
    x1 = rng.normal(size=(N, D)).astype(np.float32)
    x2 = rng.normal(size=(N, D)).astype(np.float32)
    y = (x1[:, 0] * x2[:, 0] + 0.5 * x1[:, 1]).astype(np.float32)
    if nan_at is not None:
        x1[nan_at, 0] = np.nan
    return {"x1": x1, "x2": x2, "label": y}


def make_model():
    rngs = nnx.Rngs(0)
    return models.MLP(2 * D, (8,), 1, rngs=rngs)


def loss_fn(model, batch, key):
    x = jnp.concatenate([batch["x1"], batch["x2"]], axis=-1)
    noise = 0.01 * jax.random.normal(key, batch["label"].shape)  # uses the step key
    return jnp.mean((model(x)[:, 0] - batch["label"] + noise) ** 2)


def evaluate(model, batch):
    x = jnp.concatenate([batch["x1"], batch["x2"]], axis=-1)
    return {"mse": jnp.mean((model(x)[:, 0] - batch["label"]) ** 2)}


def _no_training(model, batch, key):
    raise AssertionError("a train step was traced")


def run(workdir, data=None, loss=loss_fn, **kwargs):
    data = make_data() if data is None else data
    defaults = dict(
        num_steps=60,
        batch_size=16,
        seed=3,
        evaluate=evaluate,
        eval_data=data,
        eval_every=20,
        monitor="mse",
        checkpoint_every=10,
        log_every=5,
        progress=False,
    )
    schedule = optax.cosine_decay_schedule(1e-2, 60)
    return fit(
        make_model(), loss, optax.adam(schedule), data, workdir=workdir, **{**defaults, **kwargs}
    )


def leaves(params):
    return [np.asarray(x) for x in jax.tree.leaves(params)]


def test_sampler_permutes_each_epoch_and_depends_only_on_seed_and_step():
    sampler = EpochSampler(10, 3, seed=1)
    assert sampler.steps_per_epoch == 3
    epoch = np.concatenate([sampler.indices(s) for s in range(3)])
    assert len(set(epoch.tolist())) == 9  # one epoch: distinct examples, one left out
    again = EpochSampler(10, 3, seed=1)
    assert np.array_equal(again.indices(7), sampler.indices(7))
    assert not np.array_equal(EpochSampler(10, 3, seed=2).indices(0), sampler.indices(0))
    with pytest.raises(ValueError, match="larger than the training split"):
        EpochSampler(2, 3, seed=0)


@pytest.mark.parametrize("resume_from", [10, 30])
def test_resuming_from_any_checkpoint_ends_exactly_like_an_uninterrupted_run(tmp_path, resume_from):
    full = run(tmp_path / "full")
    # An interrupted run: only the checkpoints up to `resume_from` survived, and its
    # metrics file holds lines written after that checkpoint.
    cut = tmp_path / "cut"
    shutil.copytree(tmp_path / "full", cut)
    for step in Checkpointer(cut / "checkpoints").all_steps():
        if step > resume_from:
            shutil.rmtree(cut / "checkpoints" / str(step))
    resumed = run(cut)
    assert resumed.step == full.step == 60
    assert resumed.best_step == full.best_step
    assert resumed.best_metric == full.best_metric
    for a, b in zip(leaves(resumed.params), leaves(full.params), strict=True):
        np.testing.assert_array_equal(a, b)
    assert read_metrics(cut / "metrics.jsonl") == read_metrics(tmp_path / "full" / "metrics.jsonl")


def test_a_finished_run_returns_its_results_without_training(tmp_path):
    first = run(tmp_path)
    again = run(tmp_path)
    # no step ran: the step time is the one saved with the checkpoint
    assert first.step_seconds is not None and again.step_seconds == first.step_seconds
    for a, b in zip(leaves(first.params), leaves(again.params), strict=True):
        np.testing.assert_array_equal(a, b)


def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    sampler = EpochSampler(N, 16, seed=3)
    bad_example = int(sampler.indices(5)[0])  # first seen in the 6th batch: step 6
    with pytest.raises(NonFiniteLossError, match="non-finite at step 6;") as info:
        run(tmp_path, data=make_data(nan_at=bad_example), checkpoint_every=2)
    assert info.value.step == 6 and info.value.last_checkpoint == 4
    assert "the last good checkpoint is step 4" in str(info.value)
    assert Checkpointer(tmp_path / "checkpoints").latest_step() == 4
    # The kept checkpoint restores: the same run on clean data resumes from step 4.
    resumed = run(tmp_path, checkpoint_every=2)
    assert resumed.step == 60
    assert all(np.isfinite(x).all() for x in leaves(resumed.params))
    records = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in records if "train/loss" in r][:3] == [2, 4, 5]


def test_a_nan_gradient_under_a_finite_loss_is_caught_before_it_is_checkpointed(tmp_path):
    sampler = EpochSampler(N, 16, seed=3)
    zeroed = sampler.indices(4)  # the 5th batch: step 5
    data = make_data()
    data["w"] = np.ones(N, np.float32)
    data["w"][zeroed] = 0.0

    def with_norm(model, batch, key):  # the norm of a zero vector has a NaN gradient
        x = jnp.concatenate([batch["x1"], batch["x2"]], axis=-1)
        residual = model(x)[:, 0] - batch["label"]
        return jnp.mean(residual**2) + jnp.linalg.norm(batch["w"] * residual)

    with pytest.raises(NonFiniteLossError, match="non-finite at step 5;") as info:
        run(tmp_path, data=data, loss=with_norm, checkpoint_every=4)
    assert info.value.last_checkpoint == 4
    state, _ = Checkpointer(tmp_path / "checkpoints").restore_saved()
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(state["params"]))


def test_patience_stops_early_and_keeps_the_best_parameters(tmp_path):
    result = run(
        tmp_path,
        num_steps=200,
        eval_every=10,
        patience=2,
        evaluate=lambda m, b: {"mse": jnp.float32(1.0)},
    )
    # A constant metric improves once (the first evaluation) and never again.
    assert result.stopped_early and result.step == 30 and result.best_step == 10
    records = read_metrics(tmp_path / "metrics.jsonl")
    assert max(r["step"] for r in records) == 30


def test_a_monitor_that_is_never_finite_returns_the_last_parameters_with_a_warning(tmp_path):
    last = run(tmp_path / "last", monitor=None)
    with pytest.warns(RuntimeWarning, match=r"'mse' was never finite.*last step \(60\)"):
        never = run(tmp_path / "never", evaluate=lambda m, b: {"mse": jnp.float32(jnp.nan)})
    assert never.best_metric is None and never.best_step == never.step == 60
    for a, b in zip(leaves(never.params), leaves(last.params), strict=True):
        np.testing.assert_array_equal(a, b)


def test_bad_arguments_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="monitor='mse' needs an evaluate"):
        run(None, evaluate=None)
    with pytest.raises(ValueError, match=r"monitor 'acc' is not among the metrics evaluate "):
        run(None, monitor="acc", loss=_no_training)  # found before any step
    for seed in (-1, 2**32, 1.0):
        with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 2\*\*32\)"):
            run(None, seed=seed)
    data = make_data()
    data["label"] = data["label"][:10]
    with pytest.raises(ValueError, match="share their first dimension"):
        run(None, data=data)
    with pytest.raises(ValueError, match=r"patience must be an integer >= 1 or None, got 0"):
        run(None, patience=0)
    with pytest.raises(ValueError, match=r"patience=2 needs a monitor"):
        run(None, monitor=None, patience=2)
    nested = {"x": {"x1": data["x1"], "x2": data["x2"]}, "label": make_data()["label"]}
    with pytest.raises(ValueError, match=r"train_data\['x'\] must be an array \[N, \.\.\.\]"):
        run(None, data=nested, evaluate=None, monitor=None)
    with pytest.raises(ValueError, match=r"'mse' has shape \(3,\)"):
        run(None, evaluate=lambda m, b: {"mse": jnp.ones(3)})
    with pytest.raises(TypeError, match=r"model must be a flax\.nnx\.Module, got function"):
        fit(lambda x: x, loss_fn, optax.adam(1e-3), data, num_steps=2, batch_size=4)
    with pytest.raises(
        TypeError, match=r"optax.adam\(1e-3\) rather than optax.adam; got <function"
    ):
        fit(make_model(), loss_fn, optax.adam, data, num_steps=2, batch_size=4)
    listed = {key: value.tolist() for key, value in make_data().items()}  # lists of numbers
    assert run(None, data=listed, evaluate=None, monitor=None, num_steps=2).step == 2
    ragged = {**make_data(), "x1": [np.ones(3), np.ones(2)] * (N // 2)}
    with pytest.raises(ValueError, match=r"train_data\['x1'\] .* list of differently shaped"):
        run(None, data=ragged, evaluate=None, monitor=None)


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"num_steps": 0}, "num_steps must be an integer >= 1, got 0"),
        ({"num_steps": 2.5}, "num_steps must be an integer >= 1, got 2.5"),
        ({"batch_size": True}, "batch_size must be a positive integer, got True"),
        ({"num_examples": 3}, r"batch_size 4 is larger than the training split \(3 examples\)"),
        ({"eval_every": 0}, "eval_every must be an integer >= 1 or None, got 0"),
        ({"log_every": -1}, "log_every must be an integer >= 1, got -1"),
        ({"log_every": None}, "log_every must be an integer >= 1, got None"),
        ({"mode": "best"}, "mode must be 'min' or 'max', got 'best'"),
        (
            {"mesh": "one", "data_axis": "batch"},
            r"data_axis 'batch' is not a mesh axis \('data',\)",
        ),
        ({"mesh": "one", "param_axis": "model"}, "param_axis 'model' is not a mesh axis"),
        ({"param_axis": "model"}, "param_axis='model' needs a mesh to split the parameters"),
    ],
)
def test_fit_settings_are_checked_without_data(settings, message):
    if settings.get("mesh") == "one":
        settings = {**settings, "mesh": make_mesh((1,), ("data",))}
    with pytest.raises(ValueError, match=message):
        check_fit_settings(**{"num_steps": 5, "batch_size": 4, **settings})
    # numpy integers count as integers
    check_fit_settings(num_steps=np.int64(5), batch_size=np.int32(4), num_examples=4)


def test_restoring_a_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        Checkpointer(tmp_path / "none").restore({"a": jnp.zeros(2)})
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        Checkpointer(tmp_path / "none").restore_saved()


def test_a_checkpoint_reads_back_as_saved_without_a_target(tmp_path):
    params = nnx.state(make_model(), nnx.Param)
    with Checkpointer(tmp_path) as checkpointer:
        checkpointer.save(3, {"params": params, "step": jnp.int32(3)}, {"note": "x"})
        checkpointer.save(5, {"params": params, "step": jnp.int32(5)}, {"note": "y"})
    with Checkpointer(tmp_path) as checkpointer:
        state, meta = checkpointer.restore_saved(3)
    assert meta == {"note": "x"} and int(state["step"]) == 3
    # nested dicts, integer keys as strings, each variable's array under "value"
    saved = state["params"]["layers"]["0"]["kernel"]["value"]
    np.testing.assert_array_equal(saved, params["layers"][0]["kernel"][...])


def test_a_finished_run_asked_for_more_steps_trains_on_like_a_longer_run(tmp_path):
    # run's schedule spans 60 steps whatever num_steps is, as a caller planning ahead does
    short = run(tmp_path / "extended", num_steps=30)
    assert short.step == 30 and not short.stopped_early
    extended = run(tmp_path / "extended", num_steps=60)
    full = run(tmp_path / "full", num_steps=60)
    assert extended.step == 60 and not extended.stopped_early
    assert extended.best_step == full.best_step
    for a, b in zip(leaves(extended.params), leaves(full.params), strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_run_resumed_with_fewer_steps_another_monitor_or_model_is_refused(tmp_path):
    run(tmp_path, num_steps=40)
    with pytest.raises(ValueError, match=r"num_steps=20, but .* holds a run at step 40"):
        run(tmp_path, num_steps=20)
    # the checkpoint's best step was chosen by the mse going down
    with pytest.raises(ValueError, match=r"chosen by monitor='mse', mode='min', not .*'max'"):
        run(tmp_path, num_steps=60, mode="max")
    wider = models.MLP(2 * D, (16,), 1, rngs=nnx.Rngs(0))
    for model, optimizer, message in (
        (
            wider,
            optax.adam(1e-2),
            r"best_params/layers/0/bias/value is saved with shape \(8,\), the target's is "
            r"\(16,\);.* another model or optimizer",
        ),
        (make_model(), optax.sgd(1e-2), r"opt_state/0/count is saved but not in the target"),
    ):
        with pytest.raises(ValueError, match=message):
            fit(
                model,
                loss_fn,
                optimizer,
                make_data(),
                num_steps=60,
                batch_size=16,
                workdir=tmp_path,
            )
    assert run(tmp_path, num_steps=60).step == 60  # the refusals left the run as it was


def test_eval_data_of_any_pytree_works_on_a_mesh_too():
    def evaluate_pair(model, pair):  # eval_data as a tuple (x, y)
        return evaluate(model, {"x1": pair[0], "x2": pair[1], "label": pair[2]})

    data = make_data()
    pair = (data["x1"], data["x2"], data["label"])
    plain = run(None, evaluate=evaluate_pair, eval_data=pair)
    meshed = run(None, evaluate=evaluate_pair, eval_data=pair, mesh=make_mesh((1,), ("data",)))
    np.testing.assert_allclose(meshed.best_metric, plain.best_metric, rtol=1e-6)


def test_a_run_stopped_by_patience_stays_stopped(tmp_path):
    kwargs = dict(eval_every=10, patience=2, evaluate=lambda m, b: {"mse": jnp.float32(1.0)})
    first = run(tmp_path, num_steps=200, **kwargs)
    again = run(tmp_path, num_steps=400, **kwargs)
    assert again.stopped_early and again.step == 30
    assert again.step_seconds == first.step_seconds is not None


def test_step_seconds_leave_out_checkpointing_and_evaluation(tmp_path, monkeypatch):
    import time

    save = Checkpointer.save

    def slow_save(self, *args, **kwargs):
        time.sleep(0.5)
        return save(self, *args, **kwargs)

    monkeypatch.setattr(Checkpointer, "save", slow_save)
    # every logging interval ends at a checkpoint, which would add 0.5 s / 5 to each step
    result = run(tmp_path, num_steps=30, log_every=5, checkpoint_every=5, eval_every=5)
    assert result.step_seconds is not None and result.step_seconds < 0.05


class _Normalized(nnx.Module):
    """A layer with BatchNorm statistics and dropout drawing from its own nnx.Rngs."""

    def __init__(self):
        self.norm = nnx.BatchNorm(2 * D, momentum=0.5, rngs=nnx.Rngs(0))
        self.drop = nnx.Dropout(0.2, rngs=nnx.Rngs(dropout=1))
        self.out = nnx.Linear(2 * D, 1, rngs=nnx.Rngs(2))

    def __call__(self, x, train=True):
        h = self.norm(x, use_running_average=not train)
        return self.out(self.drop(h, deterministic=not train))


def _stateful_run(workdir, **kwargs):
    def loss(model, batch, key):
        x = jnp.concatenate([batch["x1"], batch["x2"]], axis=-1) + 3.0  # mean 3 per feature
        return jnp.mean((model(x)[:, 0] - batch["label"]) ** 2)

    def score(model, batch):
        x = jnp.concatenate([batch["x1"], batch["x2"]], axis=-1) + 3.0
        return {"mse": jnp.mean((model(x, train=False)[:, 0] - batch["label"]) ** 2)}

    settings = dict(num_steps=40, batch_size=16, evaluate=score, eval_data=make_data())
    settings.update(eval_every=10, monitor="mse", checkpoint_every=10, progress=False)
    model = _Normalized()
    result = fit(model, loss, optax.adam(1e-2), make_data(), workdir=workdir, **settings, **kwargs)
    return model, result


def test_batch_statistics_and_rng_counters_are_trained_checkpointed_and_resumed(tmp_path):
    model, full = _stateful_run(tmp_path / "full")
    # the caller's model is untouched; the result's statistics moved to the data's mean
    np.testing.assert_array_equal(model.norm.mean[...], 0.0)
    assert np.all(np.abs(np.asarray(full.model.norm.mean[...]) - 3.0) < 0.5)
    assert int(full.model.drop.rngs.count[...]) > 0
    cut = tmp_path / "cut"  # killed after the checkpoint of step 20
    shutil.copytree(tmp_path / "full", cut)
    for step in Checkpointer(cut / "checkpoints").all_steps():
        if step > 20:
            shutil.rmtree(cut / "checkpoints" / str(step))
    _, resumed = _stateful_run(cut)
    assert resumed.best_step == full.best_step
    for a, b in zip(
        jax.tree.leaves(nnx.state(resumed.model)),
        jax.tree.leaves(nnx.state(full.model)),
        strict=True,
    ):
        if jnp.issubdtype(a.dtype, jax.dtypes.prng_key):
            a, b = jax.random.key_data(a), jax.random.key_data(b)
        np.testing.assert_array_equal(a, b)
