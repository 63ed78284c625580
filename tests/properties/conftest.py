"""Hypothesis settings for the property tests: few, reproducible examples, no deadline.

Every new shape costs JAX a compilation, so examples are few and shapes small; the
timing of a single example varies with compilation, hence no deadline. Runs are
derandomized so that CI sees the same examples every time; choose another profile
with ``HYPOTHESIS_PROFILE=thorough`` to search further locally.
"""

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    max_examples=10,
    deadline=None,
    derandomize=True,
    print_blob=True,
    suppress_health_check=(HealthCheck.too_slow, HealthCheck.data_too_large),
)
settings.register_profile(
    "thorough",
    max_examples=300,
    deadline=None,
    print_blob=True,
    suppress_health_check=(HealthCheck.too_slow, HealthCheck.data_too_large),
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
