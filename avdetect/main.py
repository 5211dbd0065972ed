"""Entry point: ``python -m avdetect.main --config=configs/<method>.py[:arg] --workdir=DIR``.

Modes
  --mode=train (default)  train with periodic evaluation; a restarted job (same command)
                          resumes from the latest checkpoint in DIR/checkpoints. A method
                          whose losses read teacher posteriors is refused at start-up on a
                          dataset without both teacher sides (the error names the build
                          command; ``avdetect.teachers.requirements``). On a
                          preemption notice (SIGTERM) the current step is saved and the
                          job exits with code 143; the same command continues it.
  --mode=eval             evaluate a checkpoint: ``--checkpoint`` = a step number, a
                          checkpoints directory or one step directory; default the latest
                          in DIR/checkpoints. Writes DIR/eval_<split>.json and .md.

Overrides: any config field, e.g. ``--config.train.steps=200 --config.data.batch_size=16``.

Multi-host (TPU pods, GPU clusters, or several local processes): pass ``--multihost``
(or set ``AVDETECT_MULTIHOST=1``) on every host with the *same* command; the job then
calls ``jax.distributed.initialize`` first. On Cloud TPU and SLURM/Open MPI clusters
JAX finds the coordinator itself; elsewhere give ``--coordinator_address=HOST:PORT
--num_processes=N --process_id=I`` (or JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES /
JAX_PROCESS_ID). Everything after that is the single-host code path.
"""

from __future__ import annotations

import logging as std_logging
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (configs/<method>.py[:arg]).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and reports.")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "eval"], "Train (with eval) or evaluate only.")
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "--mode=eval: step, checkpoints dir or step dir.")
_MULTIHOST = flags.DEFINE_bool("multihost", os.environ.get("AVDETECT_MULTIHOST", "") not in ("", "0"),
                               "Call jax.distributed.initialize() before anything else.")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "HOST:PORT of process 0 (multihost).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes (multihost).")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index (multihost).")
_LIBRARY_LOGS = flags.DEFINE_bool("library_logs", False,
                                  "Show orbax's INFO lines (several per checkpoint); off: warnings only.")


class _QuietLibraries(std_logging.Filter):
    """Drops INFO/DEBUG records of chatty libraries (orbax logs every save phase)."""

    def filter(self, record: std_logging.LogRecord) -> bool:
        return record.levelno >= std_logging.WARNING or f"{os.sep}orbax{os.sep}" not in record.pathname


def init_distributed() -> None:
    """``jax.distributed.initialize`` with whichever of the coordinator flags are set."""
    import jax
    kwargs = {}
    if _COORDINATOR.value:
        kwargs["coordinator_address"] = _COORDINATOR.value
    if _NUM_PROCESSES.value is not None:
        kwargs["num_processes"] = _NUM_PROCESSES.value
    if _PROCESS_ID.value is not None:
        kwargs["process_id"] = _PROCESS_ID.value
    jax.distributed.initialize(**kwargs)
    logging.info("jax.distributed: process %d of %d", jax.process_index(), jax.process_count())


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if _CONFIG.value is None or not _WORKDIR.value:
        raise app.UsageError("--config and --workdir are required")
    logging.set_verbosity(logging.INFO)
    if not _LIBRARY_LOGS.value:
        logging.get_absl_handler().addFilter(_QuietLibraries())
    if _MULTIHOST.value:
        init_distributed()
    from avdetect import train   # after distributed init: nothing may touch devices before it
    if _MODE.value == "train":
        from avdetect.errors import ConfigError
        from avdetect.teachers import requirements
        try:   # before anything is built or written: a teacher-less dataset cannot train
            requirements.check_training_data(_CONFIG.value)
        except ConfigError as e:
            sys.exit(f"error: {e}")
        result = train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
        if result.get("preempted"):
            from avdetect.preemption import PREEMPTED_EXIT_CODE
            sys.exit(PREEMPTED_EXIT_CODE)
    else:
        train.evaluate_checkpoint(_CONFIG.value, _WORKDIR.value, _CHECKPOINT.value)


if __name__ == "__main__":
    app.run(main)
