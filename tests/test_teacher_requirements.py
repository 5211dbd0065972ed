"""Refusing what cannot train: correlation distillation on a dataset built without a
teacher, or with one side only, stops at start-up (``avdetect.main`` and the protocol
runner) with an error naming the dataset and the ``--teacher`` to rebuild with; a
complete build, the random data and ``loss.w_corr = loss.w_metric = 0`` pass."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import numpy as np
import pytest

from avdetect import config_specs, teachers
from avdetect.data import build, metadata
from avdetect.errors import ConfigError
from avdetect.teachers import requirements
from configs import corrdistill
from test_builders import _clip, standin_preprocess

REPO = pathlib.Path(__file__).resolve().parents[1]
K = 3


class _Teacher:
    """Posteriors of a fixed class track on the sides it claims."""
    num_classes, needs_audio = K, False

    def __init__(self, sides):
        self.sides, self.name = frozenset(sides), "both" if len(sides) == 2 else "half"

    def __call__(self, *, audio, mouth, num_frames, meta):
        rows = np.eye(K, dtype=np.float32)[np.arange(num_frames) % K]
        return rows, rows


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    """One folder of 4 clips built three ways: no teacher, one side, both sides."""
    src = tmp_path_factory.mktemp("videos")
    for i in range(4):
        _clip(src / f"id{i}" / "clip.mp4", hz=300 + 100 * i, seed=i)
    data_dir = tmp_path_factory.mktemp("tfds")
    names = {}
    for key, teacher in (("none", None), ("half", _Teacher({"audio"})),
                         ("both", _Teacher({"audio", "video"}))):
        bt = None if teacher is None else teachers.BuildTeacher(teacher, spec=teacher.name)
        builder, _ = build.build("videofolder/face112", data_dir=str(data_dir),
                                 manual_dir=str(src), workers=0,
                                 preprocess_fn=standin_preprocess, teacher=bt)
        names[key] = f"{builder.name}/{builder.builder_config.name}"
    return data_dir, names


def _config(name, data_dir, **loss):
    c = corrdistill.get_config("tiny")
    with c.unlocked():
        c.data.name, c.data.data_dir = name, str(data_dir)
        c.model.teacher_classes = K
        for k, v in loss.items():
            c.loss[k] = v
    return c


def test_teacher_less_and_one_sided_builds_are_refused(builds):
    data_dir, names = builds
    with pytest.raises(ConfigError, match=r"'videofolder/face112' was built without a teacher"
                                          r".*--teacher asr_align\+vsr_self"):
        requirements.check_training_data(_config(names["none"], data_dir))
    with pytest.raises(ConfigError, match=r"face112_half.*has \['audio'\]: missing \['video'\]"):
        requirements.check_training_data(_config(names["half"], data_dir))
    requirements.check_training_data(_config(names["both"], data_dir))          # passes
    with pytest.raises(ConfigError, match="teacher_classes=3"):
        c = _config(names["both"], data_dir)
        c.model.teacher_classes = 40
        requirements.check_dataset(c, names["both"], metadata.dataset_metadata(
            names["both"], str(data_dir)))
    # avdetect.main's check takes K from the dataset (the config default is 40)
    c = _config(names["both"], data_dir)
    c.model.teacher_classes = 40
    requirements.check_training_data(c)
    assert c.model.teacher_classes == K
    # nothing to refuse: no teacher loss, or the trainer's random data
    requirements.check_training_data(_config(names["none"], data_dir, w_corr=0.0,
                                             w_metric=0.0))
    requirements.check_training_data(_config("random", data_dir))
    # the protocol runner binds K from the dataset and refuses the same way
    assert config_specs.bind_dataset(_config(names["both"], data_dir), names["both"],
                                  str(data_dir)).model.teacher_classes == K
    with pytest.raises(ConfigError, match="missing \\['video'\\]"):
        config_specs.bind_dataset(_config(names["half"], data_dir), names["half"], str(data_dir))


def test_rebuild_hint_names_the_teacher_per_dataset():
    assert "--teacher oracle" in requirements.rebuild_hint("synthetic_av/tiny")
    assert "--teacher asr_align+vsr_self" in requirements.rebuild_hint("realtalk/face112")


def test_main_stops_at_start_up_on_a_teacher_less_build(builds, tmp_path):
    data_dir, names = builds
    workdir = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "avdetect.main", "--config=configs/corrdistill.py:tiny",
         f"--workdir={workdir}", f"--config.data.name={names['none']}",
         f"--config.data.data_dir={data_dir}"],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "built without a teacher" in proc.stderr and names["none"] in proc.stderr
    assert not workdir.exists()                   # refused before anything was written


def test_corr_loss_counts_only_clips_with_both_teacher_sides():
    """A clip stored without posteriors (has_teacher 0, zeros) adds nothing to the
    correlation BCE: the loss equals the one of the other clip alone (NumPy reference)."""
    import jax.numpy as jnp
    from avdetect.methods.corrdistill import CorrDistill
    c = corrdistill.get_config("tiny")
    with c.unlocked():
        c.model.teacher_classes = K
    method = CorrDistill(c)
    rng = np.random.default_rng(0)
    t, d = 6, 4
    out = {"audio": rng.normal(size=(2, t, d)), "visual": rng.normal(size=(2, t, d)),
           "logits": rng.normal(size=(2, t, 2))}
    p = rng.dirichlet(np.ones(K), size=(2, t)).astype(np.float32)
    q = rng.dirichlet(np.ones(K), size=(2, t)).astype(np.float32)
    p[1] = q[1] = 0.0                                     # clip 1: no teacher
    batch = {"teacher_audio": p, "teacher_video": q, "label": np.array([0, 1]),
             "has_teacher": np.array([1, 0])}
    terms, _ = method.loss_terms({k: jnp.asarray(v, jnp.float32) for k, v in out.items()},
                                 batch, jnp.ones((2, t)))
    a, v = out["audio"][0], out["visual"][0]
    s = (np.sum(a * v, -1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(v, axis=-1) + 1) / 2
    m = 0.5 * (p[0] + q[0])
    js = 0.5 * (np.sum(p[0] * np.log(p[0] / m), -1) + np.sum(q[0] * np.log(q[0] / m), -1))
    r = np.clip(1 - js / np.log(2), 0, 1)
    bce = -np.mean(r * np.log(s) + (1 - r) * np.log(1 - s))
    np.testing.assert_allclose(float(terms["corr"]), bce, rtol=1e-4)
