"""What ``import mmfuse`` pulls in, and the public surface."""

import ast
import pathlib
import subprocess
import sys

import mmfuse

EXPERIMENT_ONLY = ("absl", "ml_collections", "orbax", "tensorflow", "tensorflow_datasets", "grain")
# mmfuse.data is made of tfds builders read with grain; it imports them on first use only.
DATA_ONLY = ("tensorflow_datasets", "grain")
# mmfuse.train is the experiments' plumbing; its checkpoint module is the one orbax import.
CHECKPOINT_MODULE = ("train", "checkpoint.py")
PACKAGE_DIR = pathlib.Path(mmfuse.__file__).parent


def test_library_source_never_imports_experiment_only_packages():
    offenders = []
    for path in PACKAGE_DIR.rglob("*.py"):
        in_data = PACKAGE_DIR / "data" in path.parents
        is_checkpoint = path.relative_to(PACKAGE_DIR).parts == CHECKPOINT_MODULE
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            else:
                continue
            offenders += [
                f"{path.name}: {n}"
                for n in names
                if n.split(".")[0] in EXPERIMENT_ONLY
                and not (in_data and n.split(".")[0] in DATA_ONLY)
                and not (is_checkpoint and n.split(".")[0] == "orbax")
            ]
    assert not offenders


def test_import_mmfuse_loads_no_checkpointing_config_or_tensorflow_package():
    # absl is absent from this list only because flax and optax import it themselves.
    code = (
        "import sys, mmfuse, mmfuse.data; mmfuse.data.names(); "
        "print(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'ml_collections', 'orbax', 'tensorflow', 'tensorflow_datasets', 'grain', 'sklearn'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_public_namespace():
    from mmfuse import data, fusion

    assert {"create", "names", "functional", "options"} <= set(fusion.__all__)
    assert set(data.__all__) == {
        "batches",
        "info",
        "load",
        "names",
        "num_classes",
        "options",
        "splits",
    }
    assert mmfuse.__version__
