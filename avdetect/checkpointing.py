"""Checkpoints: an orbax CheckpointManager over ``<workdir>/checkpoints``.

Each checkpoint step directory holds two items:

* ``state``: the train state pytree ``{'params', 'opt_state', 'model_state'
  (non-parameter collections such as BatchNorm ``batch_stats``), 'step', 'rng'}``,
  saved with every array's sharding and restored straight onto the current mesh;
* ``data``: the input iterator state of *every process* (``process_<i>-of-<n>.json``),
  captured at the moment of the save, so the data stream resumes exactly where it was.

Saving is asynchronous (device->host copies happen in ``save``; file writing continues
in the background while training goes on); ``max_to_keep`` old steps are kept. Orbax
writes into a temporary directory and renames it when complete, so a job killed with
SIGKILL mid-save leaves no half checkpoint behind: the next start ignores and removes
the temporary directory and resumes from the last complete step.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from avdetect.errors import CheckpointError

STATE, DATA = "state", "data"


# ----------------------------------------------------------------------------------
# Per-process JSON item for the input iterator state
# ----------------------------------------------------------------------------------

def _file_name() -> str:
    return f"process_{jax.process_index()}-of-{jax.process_count()}.json"


class DataStateHandler(ocp.CheckpointHandler):
    """Writes each process's iterator state (a JSON-able value) to its own file."""

    def save(self, directory: epath.Path, args: "DataStateSave") -> None:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / _file_name()).write_text(json.dumps(args.state))

    def restore(self, directory: epath.Path, args: "DataStateRestore | None" = None) -> Any:
        path = directory / _file_name()
        if not path.exists():
            found = sorted(p.name for p in directory.iterdir()) if directory.exists() else []
            raise CheckpointError(f"{path}: no input state for this process (found {found}); "
                                  "was the checkpoint written with another process count?")
        return json.loads(path.read_text())

    def metadata(self, directory: epath.Path) -> None:
        return None

    def structure(self, directory: epath.Path) -> None:
        return None

    def finalize(self, directory: epath.Path) -> None:
        pass

    def close(self) -> None:
        pass


@ocp.args.register_with_handler(DataStateHandler, for_save=True)
@dataclasses.dataclass
class DataStateSave(ocp.args.CheckpointArgs):
    state: Any


@ocp.args.register_with_handler(DataStateHandler, for_restore=True)
@dataclasses.dataclass
class DataStateRestore(ocp.args.CheckpointArgs):
    pass


def jsonable_iterator_state(state: Any) -> Any:
    """Iterator states as JSON values: Grain DatasetIterators give dicts, DataLoader
    iterators give JSON bytes."""
    if isinstance(state, (bytes, bytearray)):
        return {"__bytes_json__": json.loads(state.decode())}
    return copy.deepcopy(state)


def native_iterator_state(state: Any) -> Any:
    """Inverse of ``jsonable_iterator_state``."""
    if isinstance(state, dict) and set(state) == {"__bytes_json__"}:
        return json.dumps(state["__bytes_json__"]).encode()
    return state


# ----------------------------------------------------------------------------------
# Manager
# ----------------------------------------------------------------------------------

class Checkpointer:
    """Save / find / restore train state + iterator state under one directory."""

    def __init__(self, directory: str | os.PathLike, *, max_to_keep: int | None = 3,
                 asynchronous: bool = True, read_only: bool = False):
        self.directory = os.path.abspath(os.fspath(directory))   # orbax needs absolute paths
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, save_interval_steps=1,       # the trainer decides when
            enable_async_checkpointing=asynchronous, create=not read_only,
            cleanup_tmp_directories=not read_only, read_only=read_only)
        self._mngr = ocp.CheckpointManager(self.directory, options=options,
                                           item_names=(STATE, DATA))

    def latest_step(self) -> int | None:
        return self._mngr.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self._mngr.all_steps())

    def save(self, step: int, state: Any, data_state: Any, *, force: bool = False) -> bool:
        """Starts saving ``state`` (device arrays) and ``data_state`` (this process's
        iterator state) as checkpoint ``step``; returns whether a save was started."""
        args = ocp.args.Composite(**{STATE: ocp.args.StandardSave(state),
                                     DATA: DataStateSave(jsonable_iterator_state(data_state))})
        return self._mngr.save(int(step), args=args, force=force)

    def _check_step(self, step: int) -> None:
        if step not in self._mngr.all_steps():
            raise CheckpointError(f"{self.directory}: no checkpoint at step {step} "
                                  f"(have {self.all_steps()})")

    def restore_state(self, step: int, abstract_state: Any) -> Any:
        """The train state of checkpoint ``step``, each array placed by the sharding of
        ``abstract_state`` (a tree of ``jax.ShapeDtypeStruct``)."""
        self._check_step(step)
        out = self._mngr.restore(int(step), args=ocp.args.Composite(
            **{STATE: ocp.args.StandardRestore(abstract_state)}))
        return out[STATE]

    def restore_data(self, step: int) -> Any:
        """This process's input iterator state saved with checkpoint ``step``."""
        self._check_step(step)
        out = self._mngr.restore(int(step), args=ocp.args.Composite(**{DATA: DataStateRestore()}))
        return native_iterator_state(out[DATA])

    def wait(self) -> None:
        """Blocks until background saves are written."""
        self._mngr.wait_until_finished()

    def close(self) -> None:
        self._mngr.wait_until_finished()
        self._mngr.close()

    def __enter__(self) -> "Checkpointer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def resolve_checkpoint(path_or_step: str | int | None, default_dir: str) -> tuple[str, int]:
    """``(checkpoints_dir, step)`` from ``--checkpoint``: None (latest in ``default_dir``),
    a step number, a checkpoints directory (latest) or one step directory."""
    if path_or_step is None or str(path_or_step) == "":
        directory, step = default_dir, None
    elif str(path_or_step).isdigit():
        directory, step = default_dir, int(path_or_step)
    else:
        p = os.path.abspath(os.fspath(path_or_step))
        if os.path.basename(p).isdigit() and os.path.isdir(os.path.join(p, STATE)):
            directory, step = os.path.dirname(p), int(os.path.basename(p))
        else:
            directory, step = p, None
    if not os.path.isdir(directory):
        raise CheckpointError(f"{directory}: checkpoint directory does not exist")
    if step is None:
        steps = [int(d) for d in os.listdir(directory)
                 if d.isdigit() and os.path.isdir(os.path.join(directory, d, STATE))]
        if not steps:
            raise CheckpointError(f"{directory}: holds no complete checkpoint")
        step = max(steps)
    elif not os.path.isdir(os.path.join(directory, str(step), STATE)):
        raise CheckpointError(f"{directory}: no checkpoint at step {step}")
    return directory, step


def load_state_numpy(directory: str | os.PathLike, step: int | None = None) -> dict:
    """The saved train state as host NumPy arrays, whatever mesh wrote it (for tools,
    tests and weight export). ``step`` None = latest."""
    directory, step = resolve_checkpoint(step, os.path.abspath(os.fspath(directory)))
    path = epath.Path(directory) / str(step) / STATE
    ckptr = ocp.PyTreeCheckpointer()
    meta = ckptr.metadata(path).item_metadata.tree
    restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), meta)
    return ckptr.restore(path, args=ocp.args.PyTreeRestore(restore_args=restore_args))
