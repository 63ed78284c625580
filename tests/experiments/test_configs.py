"""Every config file: its variants build, and an unknown variant is refused by name."""

import importlib
import pathlib

import pytest

CONFIGS = sorted(
    p.stem
    for p in (pathlib.Path(__file__).resolve().parents[2] / "configs").glob("*.py")
    if not p.stem.startswith("_")
)
VARIANTS = {  # the smoke-sized variants the docs name
    "emap_table": ["tiny"],
    "fusion_zoo": ["raw", "quick"],
    "linear_case": ["quick"],
    "mro": ["tiny"],
    "pid": ["tiny"],
    "quickstart": ["tiny"],
    "supervised": ["low_rank_tensor,synthetic/xor", "hard_gated", "tensor,digits_halves"],
}


def test_every_config_file_is_listed():
    assert set(VARIANTS) == set(CONFIGS)


@pytest.mark.parametrize("name", CONFIGS)
def test_variants_build_and_an_unknown_one_is_refused(name):
    module = importlib.import_module(f"configs.{name}")
    default = module.get_config().to_json_best_effort(sort_keys=True)
    for variant in VARIANTS[name]:  # a variant changes the run
        assert module.get_config(variant).to_json_best_effort(sort_keys=True) != default, variant
    with pytest.raises(ValueError, match="bogus"):  # never silently the default run
        module.get_config("bogus")
