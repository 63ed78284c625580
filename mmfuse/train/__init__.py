"""Shared plumbing of the experiments: training loop, checkpoints, metric files, workdirs.

Not imported by ``import mmfuse`` (it needs orbax); trainers import ``mmfuse.train``.

- ``fit``: one jitted train step with donated state, periodic evaluation, early
  stopping, a progress bar, and exact resume from the newest checkpoint;
  ``check_fit_settings`` refuses its bad settings before anything is prepared;
- ``scale_by_path``: an optimizer with some parameter groups frozen or at their own
  learning rate (pre-trained encoders);
- ``make_mesh`` / ``state_shardings``: training on a device mesh (``fit(..., mesh=)``);
- ``EpochSampler``: seeded batches whose order is a function of the step alone;
- ``Checkpointer``: orbax checkpoints of ``(state, meta)`` (the only orbax import);
- ``MetricWriter`` / ``read_metrics``: ``metrics.jsonl``;
- ``prepare_workdir``, ``write_json``, ``read_json``: a run's folder and its files.
"""

from mmfuse.train.checkpoint import Checkpointer
from mmfuse.train.loop import FitResult, NonFiniteLossError, check_fit_settings, fit
from mmfuse.train.metrics import MetricWriter, read_metrics
from mmfuse.train.param_groups import param_path, scale_by_path
from mmfuse.train.sampler import EpochSampler
from mmfuse.train.sharding import make_mesh, state_shardings
from mmfuse.train.workdir import WorkdirConflictError, prepare_workdir, read_json, write_json

__all__ = [
    "Checkpointer",
    "EpochSampler",
    "FitResult",
    "MetricWriter",
    "NonFiniteLossError",
    "WorkdirConflictError",
    "check_fit_settings",
    "fit",
    "make_mesh",
    "param_path",
    "prepare_workdir",
    "read_json",
    "read_metrics",
    "scale_by_path",
    "state_shardings",
    "write_json",
]
