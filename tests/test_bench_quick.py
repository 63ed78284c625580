"""``scripts/bench.py fusion|memory --quick`` in process: what is timed is checked, not times.

- ``fusion``: every PyTorch twin (``benchmarks/torch_twins.py``) computes its mmfuse
  operator's output and parameter gradients on the same weights (skipped without torch);
  without torch the JAX train steps still run; with ``--dtype bfloat16`` the bf16
  operator, and the twin under ``torch.autocast`` (where torch is installed), stay
  within the bf16 tolerance of the float32 operator, and the record is named for it;
- ``memory``: tensor fusion's train-step memory grows with the product of the widths,
  low-rank tensor fusion's linearly.
"""

import importlib.util
import json
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("bench", REPO / "scripts" / "bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(tmp_path, *argv: str) -> dict:
    out = tmp_path / f"{argv[0]}.json"
    assert _bench().main([*argv, "--quick", "--repeats", "1", "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["benchmark"] == argv[0] and record["quick"] and record["platform"] == "cpu"
    return record


def test_bench_fusion_quick_twins_match_operators(tmp_path):
    pytest.importorskip("torch")
    from mmfuse import fusion

    record = _run(tmp_path, "fusion", "--seq-batches")
    assert record["agree"] and record["pytorch"]["torch"]
    assert set(record["operators"]) == set(fusion.names())
    for name, entry in record["operators"].items():
        # bilinear takes exactly two modalities: text and audio
        assert len(entry["in_dims"]) == (2 if name == "bilinear" else 3)
        shapes = [check["shape"] for check in entry["twin_check"]]
        assert shapes == [[5], [3, 2]]  # [B, d] and [B, T, d]
        for check in entry["twin_check"]:
            assert check["output_max_relative_difference"] < 1e-4, name
            assert check["gradient_max_relative_difference"] < 1e-4, name
            assert check["loss_difference"] < 1e-5, name
    rows = record["results"]
    assert {r["op"] for r in rows} == set(fusion.names())
    for row in rows:
        assert row["jax_ms"] > 0 and row["torch_eager_ms"] > 0
        assert row["torch_eager_over_jax"] == pytest.approx(row["torch_eager_ms"] / row["jax_ms"])


def test_bench_fusion_quick_runs_without_torch(tmp_path):
    record = _run(tmp_path, "fusion", "--no-torch", "--ops", "tensor", "hard_gated")
    assert record["pytorch"] is None and record["agree"]
    assert {(r["op"], r["shape"]) for r in record["results"]} == {
        (op, shape) for op in ("tensor", "hard_gated") for shape in ("step", "seq")
    }
    assert all(r["jax_ms"] > 0 and "torch_eager_ms" not in r for r in record["results"])


def test_bench_fusion_quick_bf16_matches_float32(tmp_path, monkeypatch):
    has_torch = importlib.util.find_spec("torch") is not None
    ops = ("modality_shift", "nonlinear")  # gates and a norm; ReLU layers
    bench = _bench()
    monkeypatch.syspath_prepend(str(bench.BENCHMARKS_DIR))  # the twins stay importable
    bench.BENCHMARKS_DIR = tmp_path  # where the record goes without --out
    argv = ["fusion", "--quick", "--repeats", "1", "--seq-batches", "--dtype", "bfloat16"]
    assert bench.main([*argv, "--ops", *ops]) == 0
    record = json.loads((tmp_path / "fusion-bf16-cpu-quick.json").read_text())
    assert record["dtype"] == "bfloat16" and record["agree"]
    tolerance = record["mixed_precision_tolerance"]
    assert 0 < tolerance <= 5e-2
    sides = ("", "twin_") if has_torch else ("",)
    assert set(record["operators"]) == set(ops)
    for name, entry in record["operators"].items():
        checks = entry["mixed_precision_check"]
        assert [check["shape"] for check in checks] == [[5], [3, 2]]  # [B, d] and [B, T, d]
        assert entry["mixed_precision_agrees"]
        for check in checks:
            for side in sides:
                for part in ("output", "gradient"):
                    assert check[f"{side}{part}_relative_l2"] <= tolerance, (name, side, part)
            # the timed sides compute in bf16: their backward rounds the cotangents, and
            # autocast the twin's matmul outputs (float32 would give errors near 1e-7)
            assert check["gradient_relative_l2"] > 1e-4, name
            if has_torch:
                assert check["twin_output_relative_l2"] > 1e-4, name
            else:
                assert "twin_output_relative_l2" not in check
        assert "twin_check" not in entry  # the float32 run checks the twins themselves
    if has_torch:
        assert record["pytorch"]["autocast"] == "bfloat16"
    rows = record["results"]
    assert {(r["op"], r["shape"]) for r in rows} == {(op, "step") for op in ops}
    for row in rows:
        assert row["jax_ms"] > 0
        assert row["torch_eager_ms"] > 0 if has_torch else "torch_eager_ms" not in row


def test_bench_memory_quick_tensor_grows_faster_than_low_rank(tmp_path):
    from mmfuse import fusion

    record = _run(tmp_path, "memory")
    assert {r["op"] for r in record["operators"]} == set(fusion.names())
    for r in record["operators"]:
        assert r["peak_mib"] >= r["argument_mib"] > 0
    sweep = record["width_sweep"]["results"]
    widths = [r["width"] for r in sweep]
    assert len(widths) >= 3 and widths == sorted(widths)
    out_dim = record["out_dim"]
    for r in sweep:  # the parameter counts of the two parameterizations
        d = r["width"]
        assert r["tensor"]["parameters"] == (d + 1) ** 3 * out_dim
        assert r["low_rank_tensor"]["parameters"] == 4 * 3 * (d + 1) * out_dim + 4 + out_dim
    first, last = sweep[0], sweep[-1]
    tensor_growth = last["tensor"]["peak_mib"] / first["tensor"]["peak_mib"]
    low_rank_growth = last["low_rank_tensor"]["peak_mib"] / first["low_rank_tensor"]["peak_mib"]
    assert tensor_growth > 4 * low_rank_growth
    assert last["tensor"]["peak_mib"] > last["low_rank_tensor"]["peak_mib"]
