"""A workdir resumes the run of the same config and refuses another one."""

import json

import pytest

from mmfuse.train import MetricWriter, WorkdirConflictError, prepare_workdir, read_metrics


def test_same_config_resumes_and_other_config_is_refused(tmp_path):
    config = {"seed": 0, "train": {"steps": 10, "lr": 0.1}, "resume": True}
    assert prepare_workdir(tmp_path, config, ignore=("resume",)) is False
    assert json.loads((tmp_path / "config.json").read_text()) == config
    assert prepare_workdir(tmp_path, {**config, "resume": False}, ignore=("resume",)) is True
    other = {**config, "train": {"steps": 20, "lr": 0.1}}
    with pytest.raises(WorkdirConflictError, match=r"train\.steps: 10 -> 20"):
        prepare_workdir(tmp_path, other, ignore=("resume",))


def test_resume_false_discards_the_previous_run(tmp_path):
    prepare_workdir(tmp_path, {"a": 1})
    for folder in ("checkpoints", "runs/seed0", "pid/xor", "plots"):
        (tmp_path / folder).mkdir(parents=True)
    for name in ("results.json", "metrics.jsonl", "table.md", "pid/xor/late.json"):
        (tmp_path / name).write_text("{}")
    assert prepare_workdir(tmp_path, {"a": 2}, resume=False) is False
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]
    assert json.loads((tmp_path / "config.json").read_text()) == {"a": 2}


def test_resume_false_also_discards_outputs_that_no_config_recorded(tmp_path):
    (tmp_path / "checkpoints" / "10").mkdir(parents=True)  # e.g. a bare fit's
    (tmp_path / "metrics.jsonl").write_text("{}")
    assert prepare_workdir(tmp_path, {"a": 1}, resume=False) is False
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]


def test_metric_writer_drops_records_after_the_resumed_checkpoint(tmp_path):
    path = tmp_path / "metrics.jsonl"
    writer = MetricWriter(path)
    for step in (10, 20, 30):
        writer.write(step, loss=float(step))
    with path.open("a") as f:
        f.write('{"step": 40, "lo')  # a line cut short by a kill
    assert [r["step"] for r in read_metrics(path)] == [10, 20, 30]
    MetricWriter(path, resume_step=20).write(30, loss=-1.0)
    assert read_metrics(path) == [
        {"step": 10, "loss": 10.0},
        {"step": 20, "loss": 20.0},
        {"step": 30, "loss": -1.0},
    ]
