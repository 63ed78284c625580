"""Checkpoints of a training run (the only module of mmfuse that imports orbax)."""

from __future__ import annotations

import os
from typing import Any

import jax

PathLike = str | os.PathLike


class Checkpointer:
    """Saves and restores ``(state, meta)`` pairs by step in one directory.

    ``state`` is any pytree of arrays (parameters, optimizer state, step counters);
    ``meta`` a JSON-able dict (early-stopping bookkeeping, data positions). orbax
    writes each checkpoint to a temporary folder and renames it when complete, so a
    process killed at any moment leaves either a whole checkpoint or none; folders of
    unfinished saves are ignored and cleaned up. Saves are synchronous: when ``save``
    returns, the checkpoint is on disk. Only process 0 writes in a multi-process run
    (orbax coordinates the processes).

    Args:
      directory: where checkpoints go, one sub-folder per step.
      max_to_keep: how many of the newest checkpoints to keep.
    """

    def __init__(self, directory: PathLike, *, max_to_keep: int = 2):
        import orbax.checkpoint as ocp

        self._ocp = ocp
        self.directory = os.path.abspath(os.fspath(directory))
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, enable_async_checkpointing=False, create=True
        )
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        """The step of the newest complete checkpoint, or ``None``."""
        return self._manager.latest_step()

    def all_steps(self) -> tuple[int, ...]:
        return tuple(sorted(self._manager.all_steps()))

    def save(self, step: int, state: Any, meta: dict[str, Any]) -> None:
        """Writes ``state`` and ``meta`` as the checkpoint of ``step`` (replacing one there)."""
        ocp = self._ocp
        args = ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
        self._manager.save(step, args=args, force=True)
        self._manager.wait_until_finished()

    def restore(self, target: Any, step: int | None = None) -> tuple[Any, dict[str, Any]]:
        """Restores the checkpoint of ``step`` (default: the newest) into ``target``'s structure.

        Args:
          target: a pytree with the structure, shapes and dtypes of the saved state,
            e.g. ``jax.eval_shape`` of the function that builds it (no memory is used);
            shardings on its leaves place the restored arrays.
          step: which checkpoint; default the newest.

        Returns:
          ``(state, meta)``.

        Raises:
          FileNotFoundError: there is no (such) checkpoint.
          ValueError: the saved state's arrays are not ``target``'s (their paths or
            shapes differ), naming the first differences.
        """
        ocp = self._ocp
        step = self._saved_step(step)
        abstract = jax.tree.map(_abstract, target)
        with self._reader() as reader:
            saved = reader.item_metadata(step)["state"]
        differences = _differences(ocp.tree.to_flat_dict(saved), ocp.tree.to_flat_dict(abstract))
        if differences:
            raise ValueError(
                f"the checkpoint of step {step} in {self.directory} does not hold arrays "
                f"of the target's structure: {'; '.join(differences)}"
            )
        args = ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()
        )
        restored = self._manager.restore(step, args=args)
        return restored["state"], restored["meta"]

    def restore_saved(self, step: int | None = None) -> tuple[Any, dict[str, Any]]:
        """Restores the checkpoint of ``step`` (default: the newest) as it was saved.

        No target is needed: the state comes back as nested dicts of arrays (an
        ``nnx.State``'s integer keys as strings, each variable's array under
        ``"value"``), all on this process's first device whatever mesh saved them, e.g.
        to read the parameters of another run.

        Raises:
          FileNotFoundError: there is no (such) checkpoint.
        """
        ocp = self._ocp
        step = self._saved_step(step)
        # the saved shapes and dtypes, placed on one local device (the saved shardings
        # may name devices this process does not have)
        with self._reader() as reader:
            device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
            target = jax.tree.map(
                lambda leaf: (
                    jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=device)
                    if hasattr(leaf, "shape") and hasattr(leaf, "dtype")
                    else leaf
                ),
                reader.item_metadata(step)["state"],
            )
            args = ocp.args.Composite(
                state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()
            )
            restored = reader.restore(step, args=args)
        return restored["state"], restored["meta"]

    def _reader(self) -> Any:
        """A read-only manager of the same directory that knows the items' handlers."""
        ocp = self._ocp
        handlers = {"state": ocp.StandardCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()}
        options = ocp.CheckpointManagerOptions(create=False)
        return ocp.CheckpointManager(self.directory, options=options, item_handlers=handlers)

    def _saved_step(self, step: int | None) -> int:
        """``step``, or the newest one if ``None``; a missing checkpoint is an error."""
        step = self.latest_step() if step is None else step
        if step is None or step not in self._manager.all_steps():
            raise FileNotFoundError(f"no checkpoint for step {step} in {self.directory}")
        return step

    def close(self) -> None:
        self._manager.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _differences(saved: dict[tuple, Any], wanted: dict[tuple, Any], limit: int = 3) -> list[str]:
    """The first ``limit`` arrays (by path) that ``saved`` lacks, adds or holds otherwise."""
    lines = []
    for path in sorted(saved.keys() | wanted.keys(), key=lambda keys: tuple(map(str, keys))):
        name = "/".join(map(str, path))
        if path not in saved:
            lines.append(f"{name} is not saved")
        elif path not in wanted:
            lines.append(f"{name} is saved but not in the target")
        else:
            held, want = (getattr(tree[path], "shape", None) for tree in (saved, wanted))
            if held is not None and want is not None and tuple(held) != tuple(want):
                lines.append(
                    f"{name} is saved with shape {tuple(held)}, the target's is {tuple(want)}"
                )
        if len(lines) == limit:
            break
    return lines


def _abstract(leaf: Any) -> Any:
    if isinstance(leaf, jax.ShapeDtypeStruct):
        return leaf
    sharding = getattr(leaf, "sharding", None)
    return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding)
