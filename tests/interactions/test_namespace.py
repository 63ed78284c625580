"""The public surface of ``mmfuse.interactions``."""

import mmfuse
from mmfuse import interactions


def test_public_names():
    assert mmfuse.interactions is interactions
    assert {
        "Discretized",
        "EmapDecomposition",
        "EmapReport",
        "PID",
        "emap",
        "emap_decompose",
        "emap_model",
        "emap_report",
        "metrics",
        "model_fn",
        "pid",
        "pid_from_samples",
        "rank_interactions",
        "sharded_emap",
        "sharded_emap_decompose",
        "sharded_emap_model",
    } == set(interactions.__all__)
    assert all(hasattr(interactions, name) for name in interactions.__all__)
    assert interactions.metrics.NAMES == ("accuracy", "auc", "mse")
