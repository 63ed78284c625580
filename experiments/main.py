"""Runs one experiment from a config file.

    python -m experiments.main --config=configs/quickstart.py --workdir=/tmp/mmfuse/quickstart
    python -m experiments.main --config=configs/supervised.py:tensor --workdir=... \\
        --config.train.num_steps=500 --config.seed=1

The config file's ``get_config(arg)`` returns an ``ml_collections.ConfigDict`` whose
``trainer`` names a module of ``experiments`` with ``train_and_evaluate(config, workdir)``.
The config is locked: an unknown key or a value of the wrong type on the command line
stops the run with an error that names the key. Rerunning the same command on the same
workdir resumes the run; a workdir holding a run of another config is refused unless
``--config.resume=False``. With ``MMFUSE_DISTRIBUTED=1`` in the environment (set by
``scripts/run_tpu.sh``), ``jax.distributed.initialize()`` joins the processes of a
multi-host run first; only process 0 writes files.
"""

from __future__ import annotations

import importlib
import os
import pathlib
import re
import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file (a .py file with get_config).", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Folder for the run's outputs.")
flags.mark_flags_as_required(["config", "workdir"])


def trainer_module(name: str):
    """The ``experiments.<name>`` module, checked to define ``train_and_evaluate``."""
    try:
        module = importlib.import_module(f"experiments.{name}")
    except ModuleNotFoundError as error:
        if error.name != f"experiments.{name}":
            raise
        raise ValueError(f"config.trainer: no trainer module experiments.{name}") from None
    if not callable(getattr(module, "train_and_evaluate", None)):
        raise ValueError(f"config.trainer: experiments.{name} has no train_and_evaluate")
    return module


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, with a one-line error naming a bad ``--config.*`` override."""
    try:
        return flags.FLAGS(argv)
    except (AttributeError, KeyError) as error:
        # ml_collections reports an unknown key of a locked config by its last name only,
        # as "'name'" (a KeyError, possibly inside an AttributeError), perhaps followed
        # by a line suggesting the key that was meant.
        detail = error
        while isinstance(detail, BaseException) and detail.args:
            detail = detail.args[0]
        first, _, suggestion = str(detail).partition("\n")
        name = first.strip().strip("\"'")
        given = [
            arg.split("=")[0].lstrip("-")
            for arg in argv[1:]
            if arg.startswith("--config.") and name in arg.split("=")[0].split(".")
        ]
        where = f" (in --{given[0]})" if given else ""
        hint = f"; {suggestion.strip()}" if suggestion.strip() else ""
        sys.exit(f"error: unknown config key {name!r}{where}; the config is locked{hint}")
    except (TypeError, ValueError, flags.Error) as error:
        # get_config's own ValueError (e.g. an unknown variant) arrives wrapped in a flag
        # error holding a traceback: its message alone says what is wrong
        chain = [error]
        while chain[-1].__cause__ or chain[-1].__context__:
            chain.append(chain[-1].__cause__ or chain[-1].__context__)
        root = chain[-1]
        in_get_config = any("Error whilst parsing config file" in str(e) for e in chain)
        if in_get_config and type(root) is ValueError:
            given = [arg for arg in argv[1:] if arg.startswith("--config=")]
            sys.exit(f"error: {given[-1] if given else '--config'}: {root}")
        sys.exit(f"error: bad flag or config override: {error}")


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if not flags.FLAGS["verbosity"].present:  # library INFO logs only when asked for
        logging.set_verbosity(logging.WARNING)
    if re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", _WORKDIR.value):
        # pathlib would make gs://bucket/run a local folder "gs:/bucket/run"
        print(
            f"error: --workdir={_WORKDIR.value}: runs are written to a file system path; "
            "a URL (e.g. a bucket) is not supported: mount it (e.g. with gcsfuse) and "
            "pass the mounted path",
            file=sys.stderr,
        )
        return 1
    if os.path.exists(_WORKDIR.value) and not os.path.isdir(_WORKDIR.value):
        print(f"error: --workdir={_WORKDIR.value} is a file, not a folder", file=sys.stderr)
        return 1
    given = config_flags.get_config_filename(flags.FLAGS["config"])  # path[:argument]
    if not os.path.isfile(given.split(":", 1)[0]):  # ml_collections would raise on first use
        print(f"error: --config={given}: no such file", file=sys.stderr)
        return 1
    config = _CONFIG.value
    import jax

    from mmfuse import train

    if os.environ.get("MMFUSE_DISTRIBUTED") == "1":
        jax.distributed.initialize()  # coordinator and process ids from the environment

    logging.info("jax %s, devices %s", jax.__version__, jax.devices())
    workdir = pathlib.Path(_WORKDIR.value)
    recorded = read_recorded_config(workdir)
    try:
        trainer = trainer_module(config.trainer)
        trainer.train_and_evaluate(config, workdir)
    except (ValueError, train.NonFiniteLossError, train.WorkdirConflictError) as error:
        # A clear message and a non-zero exit rather than a traceback for bad input,
        # a refused workdir or a diverged run; the checkpoints stay as they were.
        if isinstance(error, ValueError):
            forget_unstarted_run(workdir, recorded)
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


def read_recorded_config(workdir: pathlib.Path) -> str | None:
    """The text of the workdir's ``config.json``, or None."""
    path = workdir / "config.json"
    return path.read_text() if path.exists() else None


def forget_unstarted_run(workdir: pathlib.Path, recorded: str | None) -> None:
    """Removes the ``config.json`` this run recorded (it differs from ``recorded``, what
    the workdir held before) before its config was found bad, so that the corrected
    command is not refused as "a run of another configuration"; so are the empty files
    and folders it opened (``metrics.jsonl``, ``checkpoints/``). Anything the run wrote
    (a checkpoint, a record) keeps the workdir as it is; a ``config.json`` the run did
    not write (its config was found bad first) stays too."""
    from mmfuse.train.workdir import RUN_OUTPUTS

    if read_recorded_config(workdir) == recorded:
        return
    outputs = [workdir / name for name in RUN_OUTPUTS]
    if any(
        any(path.iterdir()) if path.is_dir() else path.exists() and path.stat().st_size > 0
        for path in outputs
    ):
        return
    for path in outputs:
        if path.is_dir():
            path.rmdir()
        else:
            path.unlink(missing_ok=True)
    (workdir / "config.json").unlink(missing_ok=True)


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
