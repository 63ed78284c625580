"""``scripts/bench.py emap --quick`` end to end: the methods agree (no timing asserts)."""

import json
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]


def test_bench_emap_quick_methods_agree(tmp_path):
    out = tmp_path / "emap.json"
    command = [sys.executable, str(REPO / "scripts" / "bench.py"), "emap", "--quick"]
    command += ["--n", "32", "48", "--width", "16", "--hidden", "32", "--repeats", "1"]
    command += ["--tensor-dim", "6", "--tensor-out", "16", "--out", str(out)]
    command += ["--fused-tiles", "64x2x8", "16x1x4x16"]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads(out.read_text())
    assert record["benchmark"] == "emap" and record["quick"] and record["agree"]
    assert record["platform"] == "cpu" and record["jax"] and record["flax"]
    assert set(record["heads"]) == {"mlp", "tensor"}
    # 2·(7·7·16 + 7·16 + 16·2) FLOPs per pair for the tensor head, counted analytically
    assert record["heads"]["tensor"]["head_flops_per_pair"] == 2 * (7 * 7 * 16 + 7 * 16 + 16 * 2)
    assert {(r["head"], r["dtype"], r["n"]) for r in record["results"]} == {
        (h, d, n) for h in ("mlp", "tensor") for d in ("float32", "bfloat16") for n in (32, 48)
    }
    assert record["peak_tflops"] is None  # no known peak for a CPU without --peak-tflops
    for result in record["results"]:
        methods = result["methods"]
        want = {"reference", "mmfuse_full", "mmfuse_factorized"}
        if result["head"] == "mlp":  # the fused kernel, in the interpreter, in two tilings
            want |= {"mmfuse_fused", "mmfuse_fused_16x1x4x16"}
        assert set(methods) == want
        tolerance = 1e-4 if result["dtype"] == "float32" else 2e-2
        assert all(d <= tolerance for d in result["max_relative_difference"].values())
        flops = record["heads"][result["head"]]["head_flops_per_pair"]
        for timing in methods.values():  # pairs/second is N² over the median time
            assert timing["pairs_per_second"] * timing["seconds"] == pytest.approx(result["n"] ** 2)
            assert timing["tflops"] == pytest.approx(timing["pairs_per_second"] * flops / 1e12)
            assert timing["fraction_of_peak"] is None
            # what the method executes: the whole model per pair, or the head per pair
            # plus per-example (and for the tensor head per-row) work shared by N pairs
            executed = timing["executed_flops_per_pair"]
            assert timing["executed_tflops"] == pytest.approx(
                timing["pairs_per_second"] * executed / 1e12
            )
        full = record["heads"][result["head"]]["full_flops_per_pair"]
        assert methods["reference"]["executed_flops_per_pair"] == full
        assert methods["mmfuse_full"]["executed_flops_per_pair"] == full
        factorized = methods["mmfuse_factorized"]["executed_flops_per_pair"]
        if result["head"] == "mlp":  # 2·(32·32 + 32·2) per pair, 2·2·16·32 per example
            assert factorized == pytest.approx(
                2 * (32 * 32 + 32 * 2) + 2 * 2 * 16 * 32 / result["n"]
            )
        else:  # 2·(7·16 + 16·2) per pair, 2·7·7·16 per row, 2·2·16·6 per example
            per_n = 2 * 7 * 7 * 16 + 2 * 2 * 16 * 6
            assert factorized == pytest.approx(2 * (7 * 16 + 16 * 2) + per_n / result["n"])
        if result["head"] == "mlp":  # the fused kernel against the plain XLA pass
            ratio = methods["mmfuse_fused"]["speedup_vs_factorized"]
            assert ratio == pytest.approx(
                methods["mmfuse_factorized"]["seconds"] / methods["mmfuse_fused"]["seconds"]
            )
    assert record["complete"] and record["arguments"]["n"] == [32, 48]
    # largest N last as given: every head and dtype at one N before the next
    assert [r["n"] for r in record["results"]] == [32] * 4 + [48] * 4
