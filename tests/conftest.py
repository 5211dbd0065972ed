"""Shared pytest fixtures: paths to the real fixture clips, and process-wide set-up."""

from __future__ import annotations

import os
import pathlib

import pytest


def _fast_compile_flags() -> None:
    """Tests compile many more XLA programs than they run steps, so every test process
    (and the CLI processes tests start, which inherit the environment) compiles like
    ``train.fast_compile``: LLVM without its optimisation passes (the options of
    ``avdetect.cpu_compile.FAST_COMPILE``). Only speed changes; an XLA_FLAGS already set
    is kept. Set before any JAX backend starts (it reads XLA_FLAGS once)."""
    from avdetect.cpu_compile import FAST_COMPILE
    have = os.environ.get("XLA_FLAGS", "")
    add = [f"--{k}={str(v).lower()}" for k, v in FAST_COMPILE.items() if f"--{k}=" not in have]
    os.environ["XLA_FLAGS"] = " ".join([have, *add]).strip()


_fast_compile_flags()

REPO = pathlib.Path(__file__).resolve().parents[1]
FIXTURES = REPO.parent / "shared" / "fixtures" / "realav"

# Grain worker processes read absl flags; mark them parsed once for the whole session.
from absl import flags as _absl_flags  # noqa: E402

_absl_flags.FLAGS.mark_as_parsed()


@pytest.fixture(autouse=True)
def _no_user_teacher_weights(tmp_path_factory, monkeypatch):
    """Trained teacher weights (vsr_self) are looked up in $AVDETECT_TEACHER_DIR: point it
    at an empty folder so no test depends on what the developer trained in ~/.cache."""
    monkeypatch.setenv("AVDETECT_TEACHER_DIR", str(tmp_path_factory.mktemp("no_teachers")))


@pytest.fixture(scope="session")
def realav_dir() -> pathlib.Path:
    """The folder of 16 real and generated talking-face clips (../shared/fixtures/realav)."""
    if not FIXTURES.is_dir():
        pytest.fail(f"fixture folder missing: {FIXTURES} (expected beside the repository)")
    return FIXTURES


@pytest.fixture(scope="session")
def realav_clips(realav_dir) -> list[pathlib.Path]:
    clips = sorted(realav_dir.glob("*.mp4"))
    assert len(clips) == 16, f"expected 16 fixture clips in {realav_dir}, found {len(clips)}"
    return clips
