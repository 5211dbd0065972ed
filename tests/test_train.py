"""The training system: optimizer, checkpoints, writers, and whole runs.

Whole-run tests train the small ``toy_method`` (tests/toy_method.py) on the 'random'
dataset, in-process for the reference run and in subprocesses for the 8-device, the
two-process and the kill/restart runs; they all use the same config, so every run must
reproduce the reference's per-step losses and final parameters. The slow subprocess
runs start in the background when the module starts and are collected by their tests.
"""

from __future__ import annotations

import glob
import json
import os
import pathlib
import re
import signal
import socket
import struct
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

import toy_method
from avdetect import checkpointing, metric_writers, optim, sharding, train
from avdetect.data.random_batches import RandomBatches, random_eval_batches
from avdetect.input_pipeline import make_train_iterator
from avdetect.methods import build_method
from avdetect.steps import Steps
from avdetect.errors import CheckpointError, ConfigError

REPO = pathlib.Path(__file__).resolve().parents[1]
TESTS = REPO / "tests"
# The loss after k=24 steps must agree to 1e-5 across device counts / processes. Single
# intermediate steps get 1e-4: BatchNorm divides by a small batch variance in a few
# features, which can lift last-bit differences of cross-device sums to ~1e-5 for one
# batch (the next steps are back at ~1e-7, so the state itself does not drift).
LOSS_TOL, STEP_TOL = 1e-5, 1e-4


_CACHE_DIR: str | None = None


@pytest.fixture(scope="module", autouse=True)
def _compile_cache(tmp_path_factory):
    global _CACHE_DIR
    _CACHE_DIR = str(tmp_path_factory.mktemp("jax_cache"))
    yield
    _CACHE_DIR = None


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)
    env.update(PYTHONPATH=f"{TESTS}{os.pathsep}{REPO}", JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1")
    if _CACHE_DIR:   # subprocess runs of one shape share their compiled programs
        env.update(JAX_COMPILATION_CACHE_DIR=_CACHE_DIR, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                   JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
    env.update(extra)
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _main_cmd(workdir: pathlib.Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "avdetect.main", f"--config={TESTS / 'toy_method.py'}",
            f"--workdir={workdir}", *extra]


def _losses(workdir: pathlib.Path) -> dict[int, float]:
    """step -> train/loss from metrics.jsonl (a step logged twice: the later line)."""
    out = {}
    for row in metric_writers.read_jsonl(workdir / "metrics.jsonl"):
        if row["kind"] == "scalars" and "train/loss" in row:
            out[row["step"]] = row["train/loss"]
    return out


def _wait(proc: subprocess.Popen, what: str, timeout: float = 420) -> str:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        pytest.fail(f"{what} timed out; output tail:\n{out[-3000:]}")
    assert proc.returncode == 0, f"{what} failed (rc {proc.returncode}):\n{out[-3000:]}"
    return out


def _assert_same_losses(losses: dict[int, float], ref: dict[int, float], what: str) -> None:
    assert sorted(losses) == sorted(ref)
    k = max(ref)
    assert abs(losses[k] - ref[k]) < LOSS_TOL, (what, k, losses[k], ref[k])
    for step, loss in ref.items():
        assert abs(losses[step] - loss) < STEP_TOL, (what, step, losses[step], loss)


def _assert_same_params(a: dict, b: dict, atol: float) -> None:
    la, lb = jax.tree_util.tree_leaves_with_path(a), jax.tree_util.tree_leaves_with_path(b)
    assert [p for p, _ in la] == [p for p, _ in lb]
    for (path, x), (_, y) in zip(la, lb):
        np.testing.assert_allclose(x, y, atol=atol, rtol=0, err_msg=sharding.path_str(path))


# ----------------------------------------------------------------------------------
# Background runs and the in-process reference run
# ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def background(tmp_path_factory):
    """Starts the 8-device run and the two-process run; yields their handles."""
    root = tmp_path_factory.mktemp("bg")
    procs = {}
    procs["multi"] = subprocess.Popen(
        [sys.executable, str(TESTS / "multidevice_helper.py"), str(root / "multi")],
        env=_env(XLA_FLAGS="--xla_force_host_platform_device_count=8"), cwd=REPO,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    port = _free_port()
    for pid in (0, 1):
        procs[f"proc{pid}"] = subprocess.Popen(
            ["timeout", "400", *_main_cmd(root / "two_proc", "--multihost",
                                          f"--coordinator_address=localhost:{port}",
                                          "--num_processes=2", f"--process_id={pid}")],
            env=_env(), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    yield root, procs
    for p in procs.values():
        if p.poll() is None:
            p.kill()
            p.wait()


@pytest.fixture(scope="module")
def reference(tmp_path_factory, background):
    """The uninterrupted 1-process, 1-device run every other run must reproduce."""
    workdir = tmp_path_factory.mktemp("ref")
    result = train.train_and_evaluate(toy_method.toy_config(), str(workdir))
    return workdir, result


# ----------------------------------------------------------------------------------
# Whole runs
# ----------------------------------------------------------------------------------

def test_reference_run_writes_everything(reference):
    workdir, result = reference
    config = toy_method.toy_config()
    losses = _losses(workdir)
    assert sorted(losses) == list(range(1, config.train.steps + 1))
    first, last = np.mean([losses[s] for s in range(1, 5)]), np.mean([losses[s] for s in range(21, 25)])
    assert last < 0.7 * first, (first, last)          # the random data's signal is learnt
    rows = metric_writers.read_jsonl(workdir / "metrics.jsonl")
    perf = [r for r in rows if "perf/examples_per_sec" in r]
    assert perf and all(r["perf/examples_per_sec"] == pytest.approx(8 * r["perf/steps_per_sec"]) for r in perf)
    evals = [r for r in rows if "eval/test/video_auc" in r]
    assert [r["step"] for r in evals] == [12, 24]     # periodic (eval_every=12) + final
    # keep-N: only the last two checkpoints remain, and they are complete.
    ckpt_dir = workdir / "checkpoints"
    assert checkpointing.Checkpointer(ckpt_dir, read_only=True).all_steps() == [20, 24]
    assert json.loads((ckpt_dir / "24" / "data" / "process_0-of-1.json").read_text()) == {"step": 24}
    assert glob.glob(str(workdir / "events.out.tfevents.*"))
    assert json.loads((workdir / "config.json").read_text())["method"] == "toy_method:build"
    for split in ("test", "validation"):
        rep = json.loads((workdir / f"eval_{split}.json").read_text())
        assert rep["video"]["overall"]["n"] == 8 and rep["window"]["overall"]["n"] == 16
        assert set(rep["video"]["per_category"]) == {"RVRA", "RVFA", "FVRA", "FVFA"}
        assert "| video: overall |" in (workdir / f"eval_{split}.md").read_text()
    assert result["eval"]["test"]["threshold"]["source"].startswith("chosen on split 'validation'")
    assert result["eval"]["test"]["video"]["overall"]["auc"] > 0.9


def test_frozen_params_never_change_and_others_do(reference):
    workdir, _ = reference
    config = toy_method.toy_config()
    mesh = sharding.make_mesh(config.mesh)
    first = sharding.host_to_global(next(make_train_iterator(config, mesh)), mesh)
    steps = Steps(config, build_method(config), mesh, first, train=False)
    init = jax.device_get(steps.init(jax.random.PRNGKey(config.seed), first)["params"])
    final = checkpointing.load_state_numpy(workdir / "checkpoints")["params"]
    for name in ("kernel", "bias"):
        np.testing.assert_array_equal(final["frozen_proj"][name], init["frozen_proj"][name])
        assert not np.allclose(final["head"][name], init["head"][name])
    assert not np.allclose(final["visual"]["kernel"], init["visual"]["kernel"])
    # Frozen leaves carry no optimizer moments at all.
    opt = checkpointing.load_state_numpy(workdir / "checkpoints")["opt_state"]
    moments = [sharding.path_str(p) for p, _ in jax.tree_util.tree_leaves_with_path(opt)]
    assert any("visual/kernel" in m for m in moments)
    assert not any("frozen_proj" in m for m in moments)


def test_8_devices_give_the_same_loss_as_1(reference, background):
    ref_dir, _ = reference
    root, procs = background
    _wait(procs["multi"], "8-device run")
    info = json.loads((root / "multi" / "info.json").read_text())
    assert info["device_count"] == 8
    ref_losses = _losses(ref_dir)
    ref_params = checkpointing.load_state_numpy(ref_dir / "checkpoints")["params"]
    for run in ("data8", "data4_model2"):
        losses = _losses(root / "multi" / run)
        _assert_same_losses(losses, ref_losses, run)
        params = checkpointing.load_state_numpy(root / "multi" / run / "checkpoints")["params"]
        _assert_same_params(params, ref_params, atol=1e-4)
    # The model-axis rule really split the kernel (and its Adam moments) over 'model'.
    specs = info["specs"]
    assert specs["params/visual/kernel"] == ["None", "model"]
    mu = [v for k, v in specs.items() if k.startswith("opt_state") and "mu/visual/kernel" in k]
    assert mu == [["None", "model"]]
    assert all(v == [] for k, v in specs.items() if "audio/kernel" in k)


def test_two_processes_match_one(reference, background):
    ref_dir, _ = reference
    root, procs = background
    for pid in (0, 1):
        _wait(procs[f"proc{pid}"], f"process {pid} of 2")
    workdir = root / "two_proc"
    ref_losses, losses = _losses(ref_dir), _losses(workdir)
    _assert_same_losses(losses, ref_losses, "two processes")
    _assert_same_params(checkpointing.load_state_numpy(workdir / "checkpoints")["params"],
                        checkpointing.load_state_numpy(ref_dir / "checkpoints")["params"], atol=1e-4)
    # Each process saved its own input position.
    names = sorted(os.listdir(workdir / "checkpoints" / "24" / "data"))
    assert "process_0-of-2.json" in names and "process_1-of-2.json" in names
    ref_eval = json.loads((ref_dir / "eval_test.json").read_text())
    two_eval = json.loads((workdir / "eval_test.json").read_text())
    assert two_eval["video"]["overall"]["n"] == ref_eval["video"]["overall"]["n"]
    assert two_eval["video"]["overall"]["auc"] == pytest.approx(ref_eval["video"]["overall"]["auc"], abs=1e-6)


def test_sigkill_then_same_command_continues_exactly(reference, tmp_path):
    ref_dir, _ = reference
    workdir = tmp_path / "killed"
    proc = subprocess.Popen(_main_cmd(workdir), env=_env(), cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (workdir / "checkpoints" / "4" / "state").is_dir():
        if proc.poll() is not None or time.time() > deadline:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    if proc.returncode != -signal.SIGKILL:
        # Finished before the kill landed (a very busy machine): simulate the kill by
        # removing everything written after the first checkpoint.
        for d in (workdir / "checkpoints").iterdir():
            if d.name.isdigit() and int(d.name) > 4:
                subprocess.run(["rm", "-rf", str(d)], check=True)
    restart = subprocess.run(_main_cmd(workdir), env=_env(), cwd=REPO, capture_output=True,
                             text=True, timeout=400)
    assert restart.returncode == 0, restart.stderr[-3000:]
    resumed = re.findall(r"resumed from checkpoint step (\d+)", restart.stderr)
    assert resumed and 4 <= int(resumed[0]) < 24, restart.stderr[-2000:]
    ref = checkpointing.load_state_numpy(ref_dir / "checkpoints")
    got = checkpointing.load_state_numpy(workdir / "checkpoints")
    _assert_same_params(got["params"], ref["params"], atol=0)
    _assert_same_params(got["opt_state"], ref["opt_state"], atol=0)
    _assert_same_params(got["model_state"], ref["model_state"], atol=0)
    losses, ref_losses = _losses(workdir), _losses(ref_dir)
    assert all(losses[s] == ref_losses[s] for s in ref_losses)

    # Evaluation-only mode on that checkpoint, through the command line.
    eval_dir = tmp_path / "eval_only"
    ev = subprocess.run(_main_cmd(eval_dir, "--mode=eval", f"--checkpoint={workdir / 'checkpoints'}"),
                        env=_env(), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert ev.returncode == 0, ev.stderr[-3000:]
    mine = json.loads((eval_dir / "eval_test.json").read_text())
    theirs = json.loads((ref_dir / "eval_test.json").read_text())
    assert mine["checkpoint"]["step"] == 24
    for level in ("video", "window"):
        for k, v in theirs[level]["overall"].items():
            assert mine[level]["overall"][k] == pytest.approx(v, abs=1e-6), (level, k)
    assert (eval_dir / "eval_validation.md").exists()


def test_sigterm_saves_the_step_and_the_same_command_continues(reference, tmp_path, monkeypatch):
    """A preemption notice (SIGTERM) between checkpoints: the step reached is saved, the
    run stops, and running it again ends exactly where the uninterrupted run ended."""
    ref_dir, _ = reference
    workdir = tmp_path / "preempted"
    real_host_to_global, calls = sharding.host_to_global, []

    def host_to_global(batch, mesh):
        calls.append(1)
        if len(calls) == 10:        # the batch of step index 9: the notice lands mid-step 10
            os.kill(os.getpid(), signal.SIGTERM)
        return real_host_to_global(batch, mesh)

    monkeypatch.setattr(sharding, "host_to_global", host_to_global)
    handler_before = signal.getsignal(signal.SIGTERM)
    first = train.train_and_evaluate(toy_method.toy_config(), str(workdir))
    monkeypatch.setattr(sharding, "host_to_global", real_host_to_global)
    assert first["preempted"] and first["step"] == 10          # ckpt_every = 4: 10 is extra
    assert signal.getsignal(signal.SIGTERM) == handler_before      # the handler is undone
    assert checkpointing.Checkpointer(str(workdir / "checkpoints"), read_only=True).latest_step() == 10
    assert not (workdir / "eval_test.json").exists()
    second = train.train_and_evaluate(toy_method.toy_config(), str(workdir))
    assert second["step"] == 24 and not second.get("preempted")
    ref = checkpointing.load_state_numpy(ref_dir / "checkpoints")
    got = checkpointing.load_state_numpy(workdir / "checkpoints")
    for part in ("params", "opt_state", "model_state"):
        _assert_same_params(got[part], ref[part], atol=0)


# ----------------------------------------------------------------------------------
# Random data
# ----------------------------------------------------------------------------------

def test_random_batches_split_by_process_and_resume():
    config = toy_method.toy_config()
    whole = RandomBatches(config, seed=0, process_index=0, local_batch_size=8)
    halves = [RandomBatches(config, seed=0, process_index=p, local_batch_size=4) for p in (0, 1)]
    for _ in range(2):
        g = next(whole)
        parts = [next(h) for h in halves]
        for k in g:
            np.testing.assert_array_equal(g[k], np.concatenate([p[k] for p in parts]))
    assert g["mouth"].shape == (8, 4, 88, 88) and g["logmel"].shape == (8, 16, 80)
    assert g["face"].shape == (8, 4, 16, 16, 3) and g["teacher_audio"].shape == (8, 4, 8)
    state = whole.get_state()
    expected = next(whole)
    again = RandomBatches(config, seed=0, process_index=0, local_batch_size=8)
    again.set_state(state)
    np.testing.assert_array_equal(next(again)["logmel"], expected["logmel"])
    # Real clips' teacher tracks agree, fakes' do not (the learnable correlation signal).
    agree = (g["teacher_audio"].argmax(-1) == g["teacher_video"].argmax(-1)).mean(-1)
    assert np.all(agree[g["label"] == 0] == 1.0) and np.all(agree[g["label"] == 1] < 1.0)


def test_random_eval_batches_cover_every_window_once_with_padding():
    config = toy_method.toy_config(**{"data.random_eval_videos": 5})
    seen = []
    for p in (0, 1):
        for b in random_eval_batches(config, "test", process_index=p, process_count=2, local_batch_size=3):
            assert b["mouth"].shape[0] == 3
            seen += [(int(v), int(w)) for v, w, ok in zip(b["video_id"], b["window_start"], b["valid"]) if ok]
    assert sorted(seen) == sorted((v, w * 4) for v in range(5) for w in range(2))


# ----------------------------------------------------------------------------------
# Optimizer
# ----------------------------------------------------------------------------------

def _optim_cfg(**kw) -> ml_collections.ConfigDict:
    base = {"name": "adam", "lr": 0.1, "schedule": "constant", "warmup_steps": 0,
            "decay_rate": 0.5, "decay_steps": 10, "weight_decay": 0.0, "grad_clip": None}
    base.update(kw)
    return ml_collections.ConfigDict(base)


def test_schedules_follow_their_formulas():
    step = optim.make_schedule(_optim_cfg(schedule="step", warmup_steps=5), 100)
    for s in (0, 2, 5, 14, 15, 40):
        want = 0.1 * s / 5 if s < 5 else 0.1 * 0.5 ** ((s - 5) // 10)
        assert float(step(s)) == pytest.approx(want, rel=1e-6), s
    cos = optim.make_schedule(_optim_cfg(schedule="cosine", warmup_steps=10), 110)
    for s in (10, 35, 60, 110):
        assert float(cos(s)) == pytest.approx(0.05 * (1 + np.cos(np.pi * (s - 10) / 100)), abs=1e-7), s
    with pytest.raises(ConfigError, match="config.optim.schedule"):
        optim.make_schedule(_optim_cfg(schedule="wavy"), 10)


def test_masked_optimizer_freezes_exactly_and_clips_trainable_only():
    params = {"enc": {"kernel": jnp.full((3, 4), 0.5), "bias": jnp.full((4,), 0.25)},
              "head": {"kernel": jnp.full((4, 2), -0.5)}}
    mask = {"enc": {"kernel": False, "bias": False}, "head": {"kernel": True}}
    tx, _ = optim.make_optimizer(_optim_cfg(name="adamw", weight_decay=0.1, grad_clip=1.0), 10, mask)
    state = tx.init(params)
    grads = jax.tree.map(lambda p: jnp.full(p.shape, 100.0), params)
    p = params
    for _ in range(3):
        updates, state = tx.update(grads, state, p)
        p = optax.apply_updates(p, updates)
    np.testing.assert_array_equal(p["enc"]["kernel"], params["enc"]["kernel"])
    np.testing.assert_array_equal(p["enc"]["bias"], params["enc"]["bias"])
    # Independent reference for the trainable leaf: clip by the norm of the trainable
    # gradient alone, then AdamW (decay on kernels) step by step.
    g = np.full((4, 2), 100.0)
    g = g * min(1.0, 1.0 / np.linalg.norm(g))
    w, m, v = np.full((4, 2), -0.5), 0.0, 0.0
    for t in range(1, 4):
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        mh, vh = m / (1 - 0.9 ** t), v / (1 - 0.999 ** t)
        w = w - 0.1 * (mh / (np.sqrt(vh) + 1e-8) + 0.1 * w)
    np.testing.assert_allclose(p["head"]["kernel"], w, rtol=1e-5)


# ----------------------------------------------------------------------------------
# Checkpointing pieces
# ----------------------------------------------------------------------------------

def test_checkpointer_roundtrip_keep_n_and_errors(tmp_path):
    state = {"params": {"w": jnp.arange(6.0).reshape(2, 3)}, "step": jnp.int32(0),
             "rng": jax.random.PRNGKey(3)}
    with checkpointing.Checkpointer(tmp_path / "ck", max_to_keep=2) as ck:
        for s in (1, 2, 3):
            ck.save(s, {**state, "step": jnp.int32(s)}, {"next_index": 10 * s})
        ck.wait()
        assert ck.all_steps() == [2, 3]
        abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding), state)
        got = ck.restore_state(3, abstract)
        assert int(got["step"]) == 3
        np.testing.assert_array_equal(got["params"]["w"], state["params"]["w"])
        assert ck.restore_data(2) == {"next_index": 20}
        with pytest.raises(CheckpointError, match="no checkpoint at step 1"):
            ck.restore_data(1)
    assert checkpointing.resolve_checkpoint(None, str(tmp_path / "ck")) == (str(tmp_path / "ck"), 3)
    assert checkpointing.resolve_checkpoint(str(tmp_path / "ck" / "2"), "/nowhere")[1] == 2
    with pytest.raises(CheckpointError, match="does not exist"):
        checkpointing.resolve_checkpoint(str(tmp_path / "missing"), "/nowhere")
    with pytest.raises(CheckpointError, match="no checkpoint at step 7"):
        checkpointing.resolve_checkpoint(7, str(tmp_path / "ck"))
    # DataLoader-style bytes states survive the JSON item.
    raw = json.dumps({"a": [1, 2]}).encode()
    assert checkpointing.native_iterator_state(
        json.loads(json.dumps(checkpointing.jsonable_iterator_state(raw)))) == raw


# ----------------------------------------------------------------------------------
# Metric writers
# ----------------------------------------------------------------------------------

def _event_classes():
    """Event / Summary message classes built from the public event.proto field numbers
    with the protobuf library (an independent decoder for our hand-written encoder)."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
    fd = descriptor_pb2.FileDescriptorProto(name="ev_test.proto", package="t")
    F = descriptor_pb2.FieldDescriptorProto
    value = fd.message_type.add(name="Value")
    value.field.add(name="tag", number=1, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    value.field.add(name="simple_value", number=2, type=F.TYPE_FLOAT, label=F.LABEL_OPTIONAL)
    summ = fd.message_type.add(name="Summary")
    summ.field.add(name="value", number=1, type=F.TYPE_MESSAGE, type_name=".t.Value", label=F.LABEL_REPEATED)
    ev = fd.message_type.add(name="Event")
    ev.field.add(name="wall_time", number=1, type=F.TYPE_DOUBLE, label=F.LABEL_OPTIONAL)
    ev.field.add(name="step", number=2, type=F.TYPE_INT64, label=F.LABEL_OPTIONAL)
    ev.field.add(name="file_version", number=3, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    ev.field.add(name="summary", number=5, type=F.TYPE_MESSAGE, type_name=".t.Summary", label=F.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fd)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("t.Event"))


def test_event_files_decode_with_protobuf(tmp_path):
    assert metric_writers.crc32c(b"123456789") == 0xE3069283       # the CRC-32C check value
    w = metric_writers.EventFileWriter(tmp_path)
    w.write_scalars(7, {"train/loss": 0.25, "perf/steps_per_sec": np.float32(3.5)})
    w.write_scalars(300, {"eval/test/video_auc": 0.875})
    w.close()
    data = pathlib.Path(w.path).read_bytes()
    Event = _event_classes()
    events, pos = [], 0
    while pos < len(data):
        (n,) = struct.unpack("<Q", data[pos:pos + 8])
        assert struct.unpack("<I", data[pos + 8:pos + 12])[0] == metric_writers.masked_crc32c(data[pos:pos + 8])
        payload = data[pos + 12:pos + 12 + n]
        assert struct.unpack("<I", data[pos + 12 + n:pos + 16 + n])[0] == metric_writers.masked_crc32c(payload)
        events.append(Event.FromString(payload))
        pos += 16 + n
    assert events[0].file_version == "brain.Event:2"
    assert events[1].step == 7 and {v.tag: v.simple_value for v in events[1].summary.value} == \
        {"train/loss": 0.25, "perf/steps_per_sec": 3.5}
    assert events[2].step == 300 and events[2].summary.value[0].simple_value == 0.875


def test_jsonl_writer_rows_and_non_finite(tmp_path):
    w = metric_writers.create_default_writer(tmp_path, tensorboard=False)
    w.write_hparams({"optim.lr": 0.1, "mesh": [("data", -1)]})
    w.write_scalars(3, {"train/loss": jnp.float32(0.5), "train/bad": float("nan")})
    w.close()
    rows = metric_writers.read_jsonl(tmp_path / "metrics.jsonl")
    assert rows[0]["hparams"]["optim.lr"] == 0.1 and rows[0]["hparams"]["mesh"] == "[('data', -1)]"
    assert rows[1]["step"] == 3 and rows[1]["train/loss"] == 0.5 and rows[1]["train/bad"] == "nan"
    assert not glob.glob(str(tmp_path / "events.out.tfevents.*"))
    silent = metric_writers.create_default_writer(tmp_path / "p1", process_index=1)
    silent.write_scalars(1, {"x": 1.0})
    assert not (tmp_path / "p1").exists()


# ----------------------------------------------------------------------------------
# Every real method, end to end (tiny config, random data, two steps)
# ----------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("method", ["baseline", "corrdistill", "cad"])
def test_each_method_trains_checkpoints_and_evaluates(method, tmp_path):
    import importlib
    # CAD's random stand-in encoders: the trainer's mechanics are under test, not CAD's.
    extra = ",encoders=random" if method == "cad" else ""
    config = importlib.import_module(f"configs.{method}").get_config(
        "tiny,data=random,steps=2,window=8,batch=4" + extra)
    with config.unlocked():
        config.data.random_eval_videos = 4
        config.train.log_every = 1
        config.train.fast_compile = True     # compile time dominates a two-step run
    result = train.train_and_evaluate(config, str(tmp_path))
    losses = _losses(tmp_path)
    assert sorted(losses) == [1, 2] and all(np.isfinite(v) for v in losses.values())
    assert np.isfinite(result["train"]["train/grad_norm"]) and result["train"]["train/grad_norm"] > 0
    assert checkpointing.Checkpointer(tmp_path / "checkpoints", read_only=True).all_steps() == [2]
    saved = checkpointing.load_state_numpy(tmp_path / "checkpoints")
    assert int(saved["step"]) == 2
    assert set(saved["params"]) == set(jax.device_get(
        jax.eval_shape(build_method(config).init, jax.random.PRNGKey(0),
                       next(RandomBatches(config, seed=0, process_index=0, local_batch_size=4))))["params"])
    for split in ("test", "validation"):
        rep = json.loads((tmp_path / f"eval_{split}.json").read_text())
        assert rep["video"]["overall"]["n"] == 4 and rep["window"]["overall"]["n"] == 8
        assert 0.0 <= rep["video"]["overall"]["auc"] <= 1.0
