"""The README's examples run as written."""

import pathlib
import re

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def run(block):
    namespace: dict = {}
    exec(compile(block, str(README), "exec"), namespace)
    return namespace


def test_readme_has_its_examples():
    assert len(BLOCKS) == 2


def test_library_example_runs_and_pure_form_matches_module():
    namespace = run(BLOCKS[0])
    z, z2 = namespace["z"], namespace["z2"]
    assert z.shape == (32, 20, 128)
    assert float(abs(z - z2).max()) == 0.0


def test_emap_example_shows_the_xor_model_losing_its_accuracy(tmp_path, monkeypatch):
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
    report = run(BLOCKS[1])["report"]
    assert report.original >= 0.95
    assert report.projected <= 0.6
