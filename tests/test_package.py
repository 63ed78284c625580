"""What ``import mmfuse`` pulls in, and the public surface."""

import ast
import pathlib
import subprocess
import sys

import mmfuse

EXPERIMENT_ONLY = ("absl", "ml_collections", "orbax", "tensorflow", "tensorflow_datasets")
PACKAGE_DIR = pathlib.Path(mmfuse.__file__).parent


def test_library_source_never_imports_experiment_only_packages():
    offenders = []
    for path in PACKAGE_DIR.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            else:
                continue
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in EXPERIMENT_ONLY]
    assert not offenders


def test_import_mmfuse_loads_no_checkpointing_config_or_tensorflow_package():
    # absl is absent from this list only because flax and optax import it themselves.
    code = (
        "import sys, mmfuse; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'ml_collections', 'orbax', 'tensorflow', 'tensorflow_datasets'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_public_namespace():
    from mmfuse import fusion

    assert {"create", "names", "functional", "options"} <= set(fusion.__all__)
    assert mmfuse.__version__
