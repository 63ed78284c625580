"""The README's examples run as written."""

import os
import pathlib
import re
import subprocess
import sys
import textwrap

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def run(block):
    namespace: dict = {}
    exec(compile(block, str(README), "exec"), namespace)
    return namespace


def test_readme_has_its_examples():
    assert len(BLOCKS) == 3


def test_library_example_runs_and_pure_form_matches_module():
    namespace = run(BLOCKS[0])
    z, z2 = namespace["z"], namespace["z2"]
    assert z.shape == (32, 20, 128)
    assert float(abs(z - z2).max()) == 0.0


def test_custom_operator_example_registers_a_working_operator():
    # in a fresh interpreter: the registry is process-wide, and the other tests iterate
    # over the registered operators
    check = BLOCKS[2] + textwrap.dedent(
        """
        import numpy as np
        from mmfuse import interactions, models
        assert z.shape == (32, 4) and "max_pool" in fusion.names()
        assert fusion.options("max_pool")["scale"] == 1.0
        keys = jax.random.split(jax.random.key(1))
        xs = (jax.random.normal(keys[0], (6, 16)), jax.random.normal(keys[1], (6, 8)))
        p = op.functional_params()
        want = np.maximum(xs[0] @ p["kernels"][0], xs[1] @ p["kernels"][1])
        np.testing.assert_allclose(op(xs), want, rtol=1e-5, atol=1e-6)
        model = models.FusionModel([None, None], op, models.MLP(4, (), 2, rngs=nnx.Rngs(1)))
        fast, slow = interactions.emap_model(model, xs), interactions.emap(model, xs)
        np.testing.assert_allclose(fast, slow, rtol=1e-5, atol=1e-6)
        exec(BLOCK)  # a re-run cell replaces its own class
        print("ok")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", f"BLOCK = {BLOCKS[2]!r}\n" + check],
        cwd=README.parent,
        env={**os.environ, "JAX_NUMPY_RANK_PROMOTION": "allow"},  # user code: `+ b` on [B, C]
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]


def test_emap_example_shows_the_xor_model_losing_its_accuracy(tmp_path, monkeypatch):
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
    report = run(BLOCKS[1])["report"]
    assert report.original >= 0.95
    assert report.projected <= 0.6
