"""vsr_self, the lip-reading teacher distilled from the audio teacher: it learns a
mouth-shape -> viseme mapping on a tiny synthetic set (loss falls, agreement beats the
prior), emits probability rows over the audio teacher's alphabet, its weights file round-
trips and is refused with a clear message when absent or foreign, padding/chunking leaves
outputs unchanged, and a realtalk build with ``--teacher asr_align+vsr_self`` fills both
sides."""

from __future__ import annotations

import csv
import os
import pathlib

import numpy as np
import pytest
import scipy.stats

from avdetect import teachers
from avdetect.errors import ConfigError
from avdetect.teachers import alphabet, posteriors, vsr_self, vsr_self_train
from avdetect.teachers.errors import CheckpointError

REALTALK = pathlib.Path(__file__).resolve().parents[2] / "shared" / "realtalk"
K = alphabet.NUM_VISEMES
# A small model that sees shapes (eigenlips): the tests check behaviour, not capacity.
SMALL = dict(components=8, size=16, hidden=16, dropout=0.0)


def _mouth_for(labels: np.ndarray, seed: int, size: int = 32) -> np.ndarray:
    """uint8 [T, size, size]: a dark ellipse whose height and width encode the class (the
    'lips' of a frame), over a noisy skin-grey background. (Small crops keep the test
    fast; the network pools over space, so it takes any size.)"""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    out = []
    for c in labels:
        h, w = 2 + 1.2 * (c % 5), 4 + 3 * (c // 5)
        inside = ((yy - size / 2) / h) ** 2 + ((xx - size / 2) / w) ** 2 <= 1
        img = rng.normal(150, 10, (size, size))
        img[inside] = 40
        out.append(img)
    return np.clip(out, 0, 255).astype(np.uint8)


def _toy_clips(n=6, t=40, classes=(0, 1, 5, 11)) -> list[vsr_self_train.Clip]:
    """Clips whose audio-teacher posterior is the (smoothed) class the mouth shows."""
    rng = np.random.default_rng(0)
    clips = []
    for i in range(n):
        labels = np.repeat(rng.choice(classes, size=t // 4), 4)
        target = posteriors.soften(np.eye(K, dtype=np.float32)[labels], eps=0.1, sigma=0.6)
        clips.append(vsr_self_train.Clip(f"c{i}.mp4", f"id{i}", "train", _mouth_for(labels, i),
                                   target))
    return clips


@pytest.fixture(scope="module")
def trained():
    clips = _toy_clips()
    cfg = vsr_self_train.TrainConfig(steps=80, batch=8, window=16, lr=5e-3, augment=False, **SMALL)
    model, history = vsr_self_train.train(clips, cfg, progress=False, log_every=16)
    return clips, model, history


def test_training_lowers_the_loss_and_beats_the_prior(trained):
    clips, model, history = trained
    assert len(history) == 5
    assert history[-1] < 0.6 * history[0], history
    m = vsr_self_train.evaluate(model, clips, vsr_self_train.teacher_prior(clips))
    assert m["frames"] == sum(c.mouth.shape[0] for c in clips) and m["clips"] == len(clips)
    assert m["top1"] > m["chance_top1"] + 0.3 and m["kl"] < m["chance_kl"], m


def test_rows_are_distributions_and_padding_or_chunks_change_nothing(trained, monkeypatch):
    import jax
    import jax.numpy as jnp

    clips, model, _ = trained
    mouth = np.concatenate([c.mouth for c in clips[:3]])[:90]         # padded to 100
    probs = model.predict(mouth)
    assert probs.shape == (90, K) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert np.all(probs > 0)
    # one unpadded, unmasked pass is the reference for the bucketed, chunked runs
    feats = model.front_end(mouth)
    ref = np.asarray(jax.nn.softmax(model.net.apply({"params": model.params},
                                                    jnp.asarray(feats[None])), axis=-1))[0]
    np.testing.assert_allclose(probs, ref, atol=1e-5)
    assert model.net.reach == 2 * (1 + 2 + 4)
    monkeypatch.setattr(vsr_self, "MAX_CHUNK", 20)          # pieces of <= 48 frames -> 50
    np.testing.assert_allclose(model.predict(mouth), ref, atol=1e-5)


def test_front_end_features():
    """Motion is z-scored per clip and zero on a still clip; the eigenlip coefficients of
    the fitting clips are whitened (identity covariance, an independent numpy check)."""
    clips = _toy_clips(n=4)
    front = vsr_self.MouthFeatures.fit([c.mouth for c in clips], components=6, size=16)
    f = np.concatenate([front(c.mouth) for c in clips])
    assert f.shape == (160, 9) and front.dim == 9
    np.testing.assert_allclose(f[:40, :3].mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(f[:40, :3].std(0), 1, atol=2e-2)     # std + 1e-3 guard
    np.testing.assert_allclose(np.cov(f[:, 3:].T, bias=True), np.eye(6), atol=1e-3)
    still = np.repeat(clips[0].mouth[:1], 10, axis=0)
    np.testing.assert_allclose(front(still), 0, atol=1e-4)     # no motion, no deformation


def test_agreement_matches_independent_formulas():
    rng = np.random.default_rng(1)
    p = [rng.dirichlet(np.ones(K), size=n).astype(np.float32) for n in (5, 9)]
    q = [rng.dirichlet(np.ones(K), size=n).astype(np.float32) for n in (5, 9)]
    prior = rng.dirichlet(np.ones(K))
    m = vsr_self_train.agreement(q, p, prior)
    P, Q = np.concatenate(p), np.concatenate(q)
    assert m["frames"] == 14 and m["clips"] == 2
    assert m["top1"] == pytest.approx(np.mean(P.argmax(1) == Q.argmax(1)))
    assert m["kl"] == pytest.approx(np.mean(scipy.stats.entropy(P.T, Q.T)), rel=1e-6)
    assert m["chance_top1"] == pytest.approx(np.mean(P.argmax(1) == prior.argmax()))
    assert m["chance_kl"] == pytest.approx(
        np.mean([scipy.stats.entropy(r, prior) for r in P]), rel=1e-6)


def test_weights_round_trip_and_clear_errors(trained, tmp_path, monkeypatch):
    from safetensors import safe_open
    from safetensors.numpy import save_file

    clips, model, _ = trained
    path = vsr_self.save_weights(tmp_path / "w.safetensors", model, {"train": {"clips": 6}})
    loaded, training = vsr_self.load_weights(path)
    assert loaded.config() == model.config() and training == {"train": {"clips": 6}}
    mouth = clips[0].mouth
    np.testing.assert_array_equal(loaded.predict(mouth), model.predict(mouth))
    # a file declaring an input that has not landed is refused, naming the issue
    with safe_open(str(path), framework="numpy") as f:
        meta, flat = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    meta["config"] = meta["config"].replace('"mouth"', '"lips"')
    save_file(flat, str(tmp_path / "lips.safetensors"), metadata=meta)
    with pytest.raises(ConfigError, match="issue 17"):
        vsr_self.load_weights(tmp_path / "lips.safetensors")
    # missing weights: a ConfigError naming the file and the retrain command
    monkeypatch.setenv(vsr_self.TEACHER_DIR_ENV, str(tmp_path / "empty"))
    with pytest.raises(ConfigError, match="not trained yet") as info:
        vsr_self.VsrSelfTeacher()
    assert vsr_self.RETRAIN_COMMAND in str(info.value)
    assert info.value.path == str(tmp_path / "empty" / vsr_self.FILE_NAME)
    with pytest.raises(ConfigError, match="not trained yet"):
        teachers.resolve_teacher("asr_align+vsr_self")
    # a foreign or corrupt file is refused, naming it
    save_file({"x": np.zeros(3, np.float32)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(CheckpointError, match="not a vsr_self weights file"):
        vsr_self.load_weights(tmp_path / "other.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError, match="junk.safetensors"):
        vsr_self.load_weights(tmp_path / "junk.safetensors")


def test_teacher_by_name_default_location_and_path(trained, tmp_path, monkeypatch):
    clips, model, _ = trained
    vsr_self.save_weights(tmp_path / vsr_self.FILE_NAME, model, {})
    monkeypatch.setenv(vsr_self.TEACHER_DIR_ENV, str(tmp_path))
    t = teachers.get_teacher("vsr_self")
    assert (t.name, t.num_classes, t.sides) == ("vsr_self", K, {"video"})
    pa, pv = t(audio=None, mouth=clips[0].mouth, num_frames=40, meta={})
    assert pa.shape == pv.shape == (40, K)
    np.testing.assert_allclose(pa, 1.0 / K)                          # audio side: not claimed
    np.testing.assert_allclose(pv, model.predict(clips[0].mouth))
    assert t(audio=None, mouth=None, num_frames=40, meta={}) is None
    # vsr_self:PATH names another file
    monkeypatch.setenv(vsr_self.TEACHER_DIR_ENV, str(tmp_path / "nowhere"))
    other = teachers.resolve_teacher(f"vsr_self:{tmp_path / vsr_self.FILE_NAME}")
    assert other.sides == {"video"}


def _tiny_realtalk(dst: pathlib.Path, n: int = 2) -> list[dict]:
    """A realtalk-layout folder holding ``n`` short real clips of the shared corpus
    (linked, not copied) and their manifest rows."""
    if not (REALTALK / "manifest.csv").is_file():
        pytest.fail(f"shared corpus missing: {REALTALK}")
    with open(REALTALK / "manifest.csv", newline="") as f:
        reader = csv.DictReader(f)
        fields = reader.fieldnames
        rows = [r for r in reader if r["label"] == "real"]
    rows = sorted(rows, key=lambda r: float(r["dur"]))[:n]
    dst.mkdir(parents=True)
    for r in rows:
        os.symlink(REALTALK / r["file"], dst / r["file"])
    with open(dst / "manifest.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    return rows


def test_realtalk_build_with_asr_align_plus_vsr_self(trained, tmp_path, monkeypatch):
    """``--teacher asr_align+vsr_self`` by name: shards carry both sides, the video side
    of each real clip being vsr_self on its stored mouth crops and the audio side
    asr_align's (the builder's pseudo-fakes carry their source clip's posteriors)."""
    import tensorflow_datasets as tfds

    from avdetect.data import build, codec
    from test_builders import standin_preprocess

    _, model, _ = trained
    vsr_self.save_weights(tmp_path / "t" / vsr_self.FILE_NAME, model, {})
    monkeypatch.setenv(vsr_self.TEACHER_DIR_ENV, str(tmp_path / "t"))
    rows = _tiny_realtalk(tmp_path / "src")
    teacher = teachers.resolve_teacher("asr_align+vsr_self")
    assert teacher.sides == {"audio", "video"}
    builder, report = build.build("realtalk/face112", data_dir=str(tmp_path / "d"),
                                  manual_dir=str(tmp_path / "src"), workers=0,
                                  preprocess_fn=standin_preprocess, teacher=teacher)
    assert report["internal_errors"] == 0
    name = f"{builder.name}/{builder.builder_config.name}"
    seen = 0
    for split in tfds.builder(name, data_dir=str(tmp_path / "d")).info.splits:
        ds = tfds.data_source(name, split=split, data_dir=str(tmp_path / "d"))
        for i in range(len(ds)):
            ex = ds[i]
            if ex["method"].decode() != "real":
                continue
            seen += 1
            assert ex["has_teacher_audio"] and ex["has_teacher_video"] and ex["has_teacher"]
            pa, pv = ex["teacher_audio"], ex["teacher_video"]
            assert pa.shape == pv.shape == (int(ex["num_frames"]), K)
            np.testing.assert_allclose(pa.sum(1), 1, atol=1e-5)
            mouth = codec.decode_frames(list(ex["mouth"]), color=False)   # png, lossless
            np.testing.assert_allclose(pv, model.predict(mouth), atol=1e-5)
            assert np.ptp(pa.argmax(1)) > 0            # the aligner found several visemes
    assert seen == len(rows)


def test_correlation_check_matches_scipy_js(trained):
    """r_t = 1 - JS(p, q) in bits (scipy's jensenshannon is its square root); the real
    pairs of the toy clips agree more than their audio moved by 8 frames."""
    from scipy.spatial.distance import jensenshannon

    clips, model, _ = trained
    out = vsr_self_train.correlation_check(model, clips[:4])
    r = []
    for c in clips[:4]:
        q = model.predict(c.mouth)
        r.append([1 - jensenshannon(a, b, base=2) ** 2 for a, b in zip(c.target, q)])
    r = np.concatenate(r)
    assert out["frames"] == r.size == 160 and out["clips"] == 4
    assert out["real"]["mean"] == pytest.approx(r.mean(), abs=1e-5)
    assert out["real"]["std"] == pytest.approx(r.std(), abs=1e-5)
    assert out["shift8"]["mean"] < out["real"]["mean"] and out["shift8"]["real_higher_in"] == 4
