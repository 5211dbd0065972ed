"""Config for tests/test_resume_real.py: the toy method (tests/toy_method.py) trained on a
real built dataset through the Grain pipeline with worker processes.

``python -m avdetect.main --config=tests/resume_real_config.py:DATA_DIR --workdir=DIR``
(``tests/`` on PYTHONPATH); DATA_DIR holds a ``synthetic_av/tiny`` build.

Everything that makes the input stream stateful is on: 2 Grain worker processes,
per-video augmentation and the on-the-fly pseudo-fakes (shift / swap / reverse, each
drawn from the per-element or per-batch RNG), so an exact resume needs the iterator
state in the checkpoint to be right.
"""

from __future__ import annotations

import ml_collections

import toy_method

STEPS, CKPT_EVERY = 30, 3


def get_config(data_dir: str | None = None) -> ml_collections.ConfigDict:
    if not data_dir:
        raise ValueError("tests/resume_real_config.py needs the data dir: "
                         "--config=tests/resume_real_config.py:DATA_DIR")
    c = toy_method.toy_config()
    c.data = ml_collections.ConfigDict({
        "name": "synthetic_av/tiny", "data_dir": data_dir, "window": 8, "batch_size": 4,
        "eval_batch_size": 8, "num_workers": 2, "read_threads": 1, "prefetch_batches": 2,
        "inputs": ("mouth", "logmel"), "train_split": "train", "eval_split": "test",
        "val_split": "validation", "augment": True,
        "pseudo_fakes": {"shift": 0.3, "swap": 0.3, "reverse": 0.2}})
    c.train.steps = STEPS
    c.train.ckpt_every = CKPT_EVERY
    c.train.keep_ckpts = 2
    c.train.eval_every = 0          # the final evaluation only (its reports are compared)
    c.train.log_every = 1
    c.train.tensorboard = False
    return c
