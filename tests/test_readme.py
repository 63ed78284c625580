"""The README's library example runs as written."""

import pathlib
import re

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_readme_library_example_runs_and_pure_form_matches_module():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README has no python example"
    namespace: dict = {}
    exec(compile(blocks[0], str(README), "exec"), namespace)
    z, z2 = namespace["z"], namespace["z2"]
    assert z.shape == (32, 20, 128)
    assert float(abs(z - z2).max()) == 0.0
