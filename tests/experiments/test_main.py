"""The entry point: locked configs, refused workdirs, NaN stops, and exact resume after SIGKILL."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.experiments.cli import REPO_ROOT, run_main

# A short supervised run that checkpoints often.
SHORT = (
    "--config=configs/supervised.py:low_rank_tensor",
    "--config.train.num_steps=400",
    "--config.train.eval_every=50",
    "--config.train.checkpoint_every=50",
    "--config.train.log_every=25",
    "--config.emap.max_examples=300",
)


def test_unknown_config_key_exits_non_zero_naming_it(tmp_path, data_dir):
    out = run_main(
        *SHORT, "--config.train.learning_rat=0.1", f"--workdir={tmp_path}", data_dir=data_dir
    )
    assert out.returncode != 0
    assert "unknown config key 'learning_rat'" in out.stderr
    assert "--config.train.learning_rat" in out.stderr


def test_a_url_workdir_is_refused_before_anything_is_written(tmp_path, data_dir):
    out = run_main(*SHORT, "--workdir=gs://bucket/runs/sup", data_dir=data_dir)
    assert out.returncode == 1
    assert (
        out.stderr.strip()
        .splitlines()[-1]
        .startswith("error: --workdir=gs://bucket/runs/sup: runs are written to a file system path")
    )
    assert not (REPO_ROOT / "gs:").exists()  # no local folder "gs:/bucket/runs/sup"


def test_a_missing_config_file_or_a_file_as_workdir_is_one_line(tmp_path, data_dir):
    out = run_main("--config=configs/nope.py:tiny", f"--workdir={tmp_path}", data_dir=data_dir)
    assert out.returncode == 1
    assert out.stderr.strip() == "error: --config=configs/nope.py:tiny: no such file"
    afile = tmp_path / "afile"
    afile.write_text("")
    out = run_main(*SHORT, f"--workdir={afile}", data_dir=data_dir)
    assert out.returncode == 1
    assert out.stderr.strip() == f"error: --workdir={afile} is a file, not a folder"


def test_a_misspelt_key_is_named_once_with_the_suggested_one(tmp_path, data_dir):
    out = run_main(
        *SHORT, "--config.train.num_stepz=10", f"--workdir={tmp_path}", data_dir=data_dir
    )
    assert out.returncode != 0
    message = out.stderr.strip().splitlines()[-1]
    assert message.startswith("error: unknown config key 'num_stepz' (in --config.train.num_stepz)")
    assert 'Did you mean "num_steps"' in message and "\\" not in message


def test_a_config_found_bad_does_not_claim_the_new_workdir(tmp_path, data_dir):
    workdir = f"--workdir={tmp_path}"
    out = run_main(*SHORT, "--config.model.fusion=bogus", workdir, data_dir=data_dir)
    assert out.returncode != 0 and "unknown fusion operator 'bogus'" in out.stderr
    assert not (tmp_path / "config.json").exists()
    # found bad by the train loop, after the run recorded its config
    out = run_main(*SHORT, "--config.train.batch_size=0", workdir, data_dir=data_dir)
    assert out.returncode != 0 and "batch_size must be a positive integer, got 0" in out.stderr
    assert not (tmp_path / "config.json").exists()
    # the corrected command runs in it (here: fails on its own next mistake, not the workdir)
    out = run_main(*SHORT, "--config.model.kind=bogus", workdir, data_dir=data_dir)
    assert out.returncode != 0 and "unknown kind 'bogus'" in out.stderr


def test_a_config_file_refusing_its_argument_says_why_in_one_line(tmp_path, data_dir):
    config = "--config=configs/supervised.py:tensor,synthetic/xr"
    out = run_main(config, f"--workdir={tmp_path}", data_dir=data_dir)
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert (
        out.stderr.strip()
        .splitlines()[-1]
        .startswith(f"error: {config}: unknown dataset 'synthetic/xr'; datasets: book_reviews")
    )


def test_a_run_failing_before_its_first_checkpoint_leaves_nothing_behind(tmp_path):
    from experiments.main import forget_unstarted_run

    def opened(workdir):  # what a run does before training: its config and empty outputs
        (workdir / "checkpoints").mkdir(parents=True)
        (workdir / "metrics.jsonl").touch()
        (workdir / "config.json").write_text('{"seed": -1}')

    opened(tmp_path / "a")
    forget_unstarted_run(tmp_path / "a", None)
    assert not any((tmp_path / "a").iterdir())
    opened(tmp_path / "b")  # a checkpoint was written: the run stays
    (tmp_path / "b" / "checkpoints" / "50").mkdir()
    forget_unstarted_run(tmp_path / "b", None)
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == [
        "checkpoints",
        "config.json",
        "metrics.jsonl",
    ]


def test_a_bad_config_with_resume_false_leaves_the_recorded_config(tmp_path, data_dir):
    # a workdir holding only a config.json (a run that wrote nothing else yet)
    previous = {"trainer": "emap_table", "seed": 7}
    (tmp_path / "config.json").write_text(json.dumps(previous))
    tiny, workdir = "--config=configs/quickstart.py:tiny", f"--workdir={tmp_path}"
    out = run_main(
        tiny, "--config.resume=False", "--config.optim.name=adamz", workdir, data_dir=data_dir
    )
    assert out.returncode != 0 and "optim.name: unknown 'adamz'" in out.stderr
    assert json.loads((tmp_path / "config.json").read_text()) == previous


def test_a_bad_config_with_resume_false_leaves_the_previous_run(tmp_path, data_dir):
    previous = {"trainer": "supervised", "seed": 7}
    (tmp_path / "config.json").write_text(json.dumps(previous))
    (tmp_path / "results.json").write_text("{}")
    out = run_main(
        *SHORT,
        "--config.resume=False",
        "--config.optim.name=adamz",
        f"--workdir={tmp_path}",
        data_dir=data_dir,
    )
    assert out.returncode != 0 and "optim.name: unknown 'adamz'" in out.stderr
    assert json.loads((tmp_path / "config.json").read_text()) == previous
    assert (tmp_path / "results.json").exists()


def test_wrong_type_exits_non_zero_naming_the_key(tmp_path, data_dir):
    out = run_main(
        *SHORT, "--config.train.num_steps=ten", f"--workdir={tmp_path}", data_dir=data_dir
    )
    assert out.returncode != 0
    assert "config.train.num_steps" in out.stderr


def test_workdir_of_another_config_is_refused_unless_resume_is_false(tmp_path, data_dir):
    (tmp_path / "config.json").write_text(json.dumps({"trainer": "supervised", "seed": 7}))
    out = run_main(*SHORT, "--config.train.num_steps=2", f"--workdir={tmp_path}", data_dir=data_dir)
    assert out.returncode == 1
    assert "holds a run with a different configuration" in out.stderr
    assert "seed: 7 -> 0" in out.stderr
    assert not (tmp_path / "results.json").exists()


def test_nan_loss_stops_and_says_at_which_step(tmp_path, data_dir):
    out = run_main(
        *SHORT,
        "--config.optim.learning_rate=1e30",
        "--config.optim.clip_norm=0.0",
        "--config.optim.schedule=constant",
        f"--workdir={tmp_path}",
        data_dir=data_dir,
    )
    assert out.returncode == 1, out.stderr[-2000:]
    assert "training loss (or its gradient) became non-finite at step" in out.stderr
    assert not (tmp_path / "results.json").exists()


def _start(workdir, data_dir, log):
    env = {**os.environ, "TFDS_DATA_DIR": str(data_dir), "JAX_PLATFORMS": "cpu"}
    return subprocess.Popen(
        [sys.executable, "-m", "experiments.main", *SHORT, f"--workdir={workdir}"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log,
    )


def test_sigkill_after_the_first_checkpoint_then_resume_gives_identical_results(tmp_path, data_dir):
    # The uninterrupted run (it also builds the dataset, so the killed run starts fast).
    full = run_main(*SHORT, f"--workdir={tmp_path / 'full'}", data_dir=data_dir)
    assert full.returncode == 0, full.stderr[-3000:]
    expected = json.loads((tmp_path / "full" / "results.json").read_text())

    killed = tmp_path / "killed"
    log_path = tmp_path / "killed.log"
    with log_path.open("w") as log:
        process = _start(killed, data_dir, log)
        # orbax renames a checkpoint's folder into place once it is complete.
        first = killed / "checkpoints" / "50"
        deadline = time.monotonic() + 300
        while not first.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"no checkpoint before the run ended: {log_path.read_text()[-3000:]}")
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL
    assert not (killed / "results.json").exists()

    resumed = run_main(*SHORT, f"--workdir={killed}", data_dir=data_dir)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads((killed / "results.json").read_text()) == expected
    assert expected["test"]["accuracy"] > 0.9  # xor is solved by low-rank fusion
    assert expected["emap"]["projected"] < 0.65  # and needs the interaction
    assert expected["data_options"]["latent"] == "bits"  # the values used, defaults too
    for name in ("config.json", "metrics.jsonl", "plots/learning_curves.png", "plots/emap.png"):
        assert (killed / name).exists(), name
