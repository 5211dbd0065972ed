"""Exact kill/resume of a whole training run on a real built dataset.

tests/test_train.py kills and resumes runs on the 'random' dataset; this file does it
where the state is hardest to get right: a ``synthetic_av/tiny`` dataset generated and
built by the project's own commands (face tracking, TFDS array_record shards), read
through the Grain pipeline with 2 worker processes, per-video augmentation and the
on-the-fly pseudo-fakes, checkpointed by orbax every few steps
(tests/resume_real_config.py).

The same command is run (a) uninterrupted and (b) SIGKILLed mid-run - the whole process
group, Grain workers included - and then run again to completion. The final train state
(every leaf of params, optimizer state, BatchNorm statistics, step, RNG), the saved
iterator state, every logged train/eval scalar and the final evaluation reports of (b)
must equal (a)'s bit for bit.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import time
import warnings

import jax
import numpy as np
import pytest

import resume_real_config as rc
from avdetect import checkpointing, metric_writers, sharding

REPO = pathlib.Path(__file__).resolve().parents[1]
TESTS = REPO / "tests"
TIMEOUT = 400          # seconds per subprocess: generous for a loaded 2-core machine


def _env(cache_dir: pathlib.Path) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)
    # The runs share one compilation cache: only the first pays for compiling.
    env.update(PYTHONPATH=f"{TESTS}{os.pathsep}{REPO}", JAX_PLATFORMS="cpu",
               PYTHONUNBUFFERED="1", JAX_COMPILATION_CACHE_DIR=str(cache_dir),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
    return env


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """12 generated clips of 1.2 s (4 per split), built with the builder command line."""
    from datasets.synthetic_av import generate as gen
    root = tmp_path_factory.mktemp("resume_real")
    gen.generate(root / "clips", num_clips=12, seconds=1.2, size=96, workers=2, progress=False)
    data_dir = root / "data"
    out = subprocess.run(
        [sys.executable, "-m", "avdetect.data.build", "synthetic_av/tiny",
         f"--data_dir={data_dir}", f"--manual_dir={root / 'clips'}", "--workers=2", "--strict"],
        env=_env(root / "jax_cache"), cwd=REPO, capture_output=True, text=True, timeout=TIMEOUT)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads((data_dir / "synthetic_av" / "tiny" / "1.0.0" / "build_report.json")
                        .read_text())
    assert report["written"] == {"train": 4, "validation": 4, "test": 4}, report["written"]
    return root, data_dir


def _command(data_dir: pathlib.Path, workdir: pathlib.Path) -> list[str]:
    # Absolute paths throughout: orbax refuses relative checkpoint directories.
    return [sys.executable, "-m", "avdetect.main",
            f"--config={TESTS / 'resume_real_config.py'}:{data_dir.resolve()}",
            f"--workdir={workdir.resolve()}"]


def _start(root, data_dir, workdir, log: pathlib.Path) -> subprocess.Popen:
    # Output to a file (a pipe nobody reads while polling could fill and stall the run).
    # A session of its own: the run, its Grain workers and multiprocessing's resource
    # tracker form one process group, which _kill_mid_run finds.
    with open(log, "w") as f:
        return subprocess.Popen(_command(data_dir, workdir), env=_env(root / "jax_cache"),
                                cwd=REPO, stdout=f, stderr=subprocess.STDOUT,
                                start_new_session=True)


def _finish(proc: subprocess.Popen, log: pathlib.Path, what: str) -> str:
    try:
        proc.wait(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        pytest.fail(f"{what} timed out; output tail:\n{log.read_text()[-3000:]}")
    out = log.read_text()
    assert proc.returncode == 0, f"{what} failed (rc {proc.returncode}):\n{out[-3000:]}"
    return out


def _group(pgid: int) -> dict[int, str]:
    """pid -> command line of every live process in process group ``pgid`` (Linux /proc)."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = pathlib.Path(f"/proc/{entry}/stat").read_text()
            cmdline = pathlib.Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:            # exited meanwhile
            continue
        fields = stat.rsplit(")", 1)[1].split()     # after "pid (comm)": state, ppid, pgrp
        if int(fields[2]) == pgid and fields[0] != "Z":
            out[int(entry)] = cmdline.replace(b"\0", b" ").decode(errors="replace")
    return out


def _kill_mid_run(proc: subprocess.Popen) -> None:
    """SIGKILL the trainer and its Grain workers at once. multiprocessing's resource
    tracker is spared: when the killed processes' pipes close it unlinks the shared-memory
    blocks they held (Grain's batches in flight); killed too, it would leave ~100 of them
    in /dev/shm on every run of this test."""
    for pid, cmd in _group(proc.pid).items():
        if "multiprocessing.resource_tracker" not in cmd:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    proc.wait()
    deadline = time.time() + 60
    while _group(proc.pid) and time.time() < deadline:   # the tracker's clean-up
        time.sleep(0.05)
    assert not _group(proc.pid), f"processes left after the kill: {_group(proc.pid)}"


def _complete_steps(ckpt_dir: pathlib.Path) -> list[int]:
    """Steps of finished checkpoints (orbax renames a step's temporary directory to the
    bare step number only once everything in it is written)."""
    if not ckpt_dir.is_dir():
        return []
    return sorted(int(p.name) for p in ckpt_dir.iterdir() if p.name.isdigit())


def _scalars(workdir: pathlib.Path) -> dict[int, dict[str, float]]:
    """step -> every train/ and eval/ scalar logged at that step; a step logged again after
    a restart takes the later values (timings, perf/*, are left out)."""
    out: dict[int, dict[str, float]] = {}
    for row in metric_writers.read_jsonl(workdir / "metrics.jsonl"):
        if row["kind"] == "scalars":
            out.setdefault(row["step"], {}).update(
                {k: v for k, v in row.items() if k.startswith(("train/", "eval/"))})
    return out


def _assert_trees_identical(got, want, what: str) -> None:
    lg, lw = jax.tree_util.tree_leaves_with_path(got), jax.tree_util.tree_leaves_with_path(want)
    assert [p for p, _ in lg] == [p for p, _ in lw], what
    assert lg, f"{what}: no leaves"
    for (path, x), (_, y) in zip(lg, lw):
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and x.shape == y.shape, (what, sharding.path_str(path))
        assert np.array_equal(x, y), f"{what}/{sharding.path_str(path)} differs"


def test_sigkill_mid_run_then_same_command_ends_bit_for_bit_like_uninterrupted(built):
    root, data_dir = built
    ref_dir, run_dir = root / "uninterrupted", root / "killed"
    # (a) runs alongside (b): separate processes and workdirs, nothing shared but the
    # compilation cache, which cannot change a result.
    ref = _start(root, data_dir, ref_dir, root / "uninterrupted.log")

    # (b) kill the same command once a checkpoint past step 1 is complete, mid-run.
    proc = _start(root, data_dir, run_dir, root / "killed.log")
    deadline, seen = time.time() + TIMEOUT, []
    while proc.poll() is None and time.time() < deadline:
        seen = _complete_steps(run_dir / "checkpoints")
        if seen:
            break
        time.sleep(0.005)
    _kill_mid_run(proc)
    out = (root / "killed.log").read_text()
    assert seen and proc.returncode == -signal.SIGKILL, (
        f"the run was not killed mid-run (rc {proc.returncode}, checkpoints {seen}):\n"
        f"{out[-3000:]}")
    left = _complete_steps(run_dir / "checkpoints")
    if left[-1] >= rc.STEPS:
        # Only on a machine so slow that polling missed every intermediate checkpoint:
        # drop the final one so the rerun still resumes mid-run.
        warnings.warn(f"kill landed after the last checkpoint ({left}); dropping step {left[-1]}")
        shutil.rmtree(run_dir / "checkpoints" / str(left[-1]))
    assert not (run_dir / "eval_test.json").exists()

    rerun_out = _finish(_start(root, data_dir, run_dir, root / "rerun.log"), root / "rerun.log",
                        "rerun after SIGKILL")
    ref_out = _finish(ref, root / "uninterrupted.log", "uninterrupted run")
    resumed = re.findall(r"resumed from checkpoint step (\d+)", rerun_out)
    assert resumed and rc.CKPT_EVERY <= int(resumed[0]) < rc.STEPS, rerun_out[-3000:]
    assert "resumed from checkpoint" not in ref_out

    # Final state: the same checkpoints kept, every leaf identical, the same stream position.
    ckpt_ref, ckpt_run = ref_dir / "checkpoints", run_dir / "checkpoints"
    assert _complete_steps(ckpt_run) == _complete_steps(ckpt_ref) == [
        rc.STEPS - rc.CKPT_EVERY, rc.STEPS]
    want = checkpointing.load_state_numpy(ckpt_ref)
    got = checkpointing.load_state_numpy(ckpt_run)
    assert sorted(got) == sorted(want) == ["model_state", "opt_state", "params", "rng", "step"]
    for part in sorted(want):
        _assert_trees_identical(got[part], want[part], part)
    data_state = [json.loads((c / str(rc.STEPS) / "data" / "process_0-of-1.json").read_text())
                  for c in (ckpt_ref, ckpt_run)]
    assert data_state[0] == data_state[1]

    # Every step's train scalars and the final evaluation, logged and reported, identical.
    want_scalars, got_scalars = _scalars(ref_dir), _scalars(run_dir)
    assert sorted(want_scalars) == list(range(1, rc.STEPS + 1))
    assert got_scalars == want_scalars
    assert any(k.startswith("eval/test/") for k in want_scalars[rc.STEPS])
    for name in ("eval_test.json", "eval_validation.json"):   # (the .md files render these)
        assert (run_dir / name).read_bytes() == (ref_dir / name).read_bytes(), name
