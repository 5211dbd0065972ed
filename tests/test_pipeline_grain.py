"""Grain pipelines over in-memory video-level examples of the shard format: window
alignment, determinism, host sharding, eval coverage, iterator-state resume, and the
per-video augmentation checked against independent references (NumPy, scikit-image)."""

from __future__ import annotations

import collections
import json

import numpy as np
import pytest
import skimage.transform

from avdetect import contract
from avdetect.data import augment as aug
from avdetect.data import codec
from avdetect.data import pipeline as pl
from avdetect.data.metadata import SplitIndex
from avdetect.data.windows import window_starts
from avdetect.errors import ConfigError

FACE = 24          # small face crops keep the tests fast
K = 5              # teacher classes
T = 6              # window
METHODS = ("real", "wav2lip", "faceswap")


def _frame_value(video: int, frame: int) -> int:
    return (video * 37 + frame * 5) % 251


def make_example(video: int, num_frames: int, method: str = "real") -> dict:
    """An example shaped like a decoded shard record; frame f of video v carries the value
    _frame_value(v, f) everywhere so windows can be checked exactly."""
    vals = np.array([_frame_value(video, f) for f in range(num_frames)], np.uint8)
    mouth = np.broadcast_to(vals[:, None, None], (num_frames, contract.MOUTH_SIZE,
                                                  contract.MOUTH_SIZE)).copy()
    face = np.broadcast_to(vals[:, None, None, None], (num_frames, FACE, FACE, 3)).copy()
    m = contract.MEL_PER_FRAME
    logmel = np.repeat(np.arange(num_frames, dtype=np.float16), m)[:, None] * np.ones(
        (1, contract.N_MELS), np.float16)                                  # [4T, 80]
    teacher = (np.arange(num_frames)[:, None] * 10 + np.arange(K)[None]).astype(np.float16)
    fake = method != "real"
    return {
        "video_id": f"vid{video:03d}".encode(),
        "num_frames": np.int32(num_frames),
        "mouth": np.array(codec.encode_frames(mouth, "png"), dtype=object),
        "face": np.array(codec.encode_frames(face, "png"), dtype=object),
        "logmel": logmel,
        "face_found": (np.arange(num_frames) % 3 != 0),
        "boxes": np.zeros((num_frames, 4), np.float32),
        "has_audio": True,
        "teacher_audio": teacher,
        "teacher_video": teacher + 1,
        "has_teacher": True,
        "label": int(fake),
        "video_fake": fake,
        "audio_fake": False,
        "category": 2 if fake else 0,
        "method": method.encode(),
        "identity": f"id{video % 4}".encode(),
    }


LENGTHS = [3, 6, 7, 13, 1, 20, 9, 12, 6, 5, 17]


@pytest.fixture(scope="module")
def source():
    return [make_example(v, n, METHODS[v % 3]) for v, n in enumerate(LENGTHS)]


@pytest.fixture(scope="module")
def index(source):
    return SplitIndex.from_examples(source)


def cfg(**kw):
    base = dict(name="unused", data_dir="unused", window=T, batch_size=4, num_workers=0,
                read_threads=1, prefetch_batches=2)
    base.update(kw)
    return base


def take(it, n):
    return [next(it) for _ in range(n)]


def assert_batches_equal(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for k in x:
            np.testing.assert_array_equal(x[k], y[k], err_msg=k)


# --------------------------------------------------------------------------- windows

def test_window_content_is_aligned_across_streams(source, index):
    maker = pl._maker(cfg(), index)
    ex = dict(source[5], _record=5)                      # 20 frames
    w = maker.cut(ex, 4)
    frames = np.arange(4, 4 + T)
    want = np.array([_frame_value(5, f) for f in frames], np.uint8)
    np.testing.assert_array_equal(w["mouth"][:, 40, 40], want)
    np.testing.assert_array_equal(w["face"][:, 3, 3, 1], want)
    assert w["mouth"].shape == (T, 88, 88) and w["face"].shape == (T, FACE, FACE, 3)
    # 4 mel frames per video frame, starting at 4*start.
    assert w["logmel"].shape == (4 * T, 80) and w["logmel"].dtype == np.float32
    np.testing.assert_array_equal(w["logmel"][:, 0], np.repeat(frames, 4).astype(np.float32))
    np.testing.assert_array_equal(w["teacher_audio"][:, 0], frames * 10.0)
    np.testing.assert_array_equal(w["teacher_video"][:, 2], frames * 10.0 + 3)
    np.testing.assert_array_equal(w["face_found"], (frames % 3 != 0).astype(np.float32))
    np.testing.assert_array_equal(w["frame_mask"], np.ones(T, np.float32))
    assert w["window_start"] == 4 and w["video_id"] == 5
    assert w["method"] == index.method_names.index(METHODS[5 % 3])


def test_short_video_is_padded_and_masked(source, index):
    maker = pl._maker(cfg(), index)
    w = maker.cut(dict(source[0], _record=0), 0)            # 3 frames < T
    np.testing.assert_array_equal(w["frame_mask"], [1, 1, 1, 0, 0, 0])
    assert (w["mouth"][3:] == 0).all() and (w["face"][3:] == 0).all()
    # padded log-mel is silence, log(LOG_FLOOR) (0 would be a loud frame)
    np.testing.assert_allclose(w["logmel"][12:], np.log(contract.LOG_FLOOR), rtol=1e-6)
    assert (w["logmel"][:12, 0] == np.repeat([0, 1, 2], 4)).all()
    assert (w["teacher_audio"][3:] == 0).all()


def test_face_resize_to_configured_size(source, index):
    maker = pl._maker(cfg(face_size=12), index)
    w = maker.cut(dict(source[3], _record=3), 0)
    assert w["face"].shape == (T, 12, 12, 3)
    np.testing.assert_array_equal(w["face"][:, 6, 6, 0],
                                  [_frame_value(3, f) for f in range(T)])


def _audio_frames(w):
    """The source frame each window frame's audio came from (the log-mel carries it)."""
    return w["logmel"][::contract.MEL_PER_FRAME, 0].astype(int)


def test_sync_negatives_shift_only_the_audio_of_real_windows(source, index):
    maker = pl._maker(cfg(sync_negatives=1.0, sync_min_shift=3), index)
    real = dict(source[3], _record=3)                       # real, 13 frames
    assert real["label"] == 0
    shifts = set()
    for seed in range(60):
        w = maker.random_window(real, np.random.default_rng(seed), augment=False)
        v = int(w["window_start"])
        a = _audio_frames(w)[0]
        frames = np.arange(v, v + T)
        # Video streams stay at the window; every audio stream moved together.
        np.testing.assert_array_equal(w["mouth"][:, 40, 40], [_frame_value(3, f) for f in frames])
        np.testing.assert_array_equal(w["teacher_video"][:, 0], frames * 10.0 + 1)
        np.testing.assert_array_equal(_audio_frames(w), np.arange(a, a + T))
        np.testing.assert_array_equal(w["teacher_audio"][:, 0], np.arange(a, a + T) * 10.0)
        assert abs(a - v) >= 3 and 0 <= a <= 13 - T
        assert w["label"] == 1 and w["audio_fake"] == 1
        shifts.add(a - v)
    assert min(shifts) < 0 < max(shifts)                     # earlier and later audio
    # Fakes are left as they are; a real video with no room for a shift stays real.
    fake = dict(source[7], _record=7)
    w = maker.random_window(fake, np.random.default_rng(0), augment=False)
    assert w["label"] == 1 and w["audio_fake"] == 0
    np.testing.assert_array_equal(_audio_frames(w), np.arange(T) + int(w["window_start"]))
    short = dict(source[9], _record=9)                      # real, 5 frames < T
    w = maker.random_window(short, np.random.default_rng(0), augment=False)
    assert w["label"] == 0 and (_audio_frames(w)[:5] == np.arange(5)).all()


def test_sync_negatives_rate_and_default_off(source, index):
    real = dict(source[3], _record=3)
    half = pl._maker(cfg(sync_negatives=0.5), index)
    labels = [int(half.random_window(real, np.random.default_rng(s), augment=False)["label"])
              for s in range(400)]
    assert 0.4 < np.mean(labels) < 0.6
    off = pl._maker(cfg(), index)
    for s in range(20):
        w = off.random_window(real, np.random.default_rng(s), augment=False)
        assert w["label"] == 0
        np.testing.assert_array_equal(_audio_frames(w), np.arange(T) + int(w["window_start"]))
    with pytest.raises(ValueError, match="outside"):
        off.cut(real, 0, audio_start=10)


def test_window_starts_cover_video():
    assert window_starts(13, 6) == [0, 6, 12]
    assert window_starts(12, 6) == [0, 6]
    assert window_starts(1, 6) == [0]


# --------------------------------------------------------------------------- training

def test_train_batches_shapes_and_dtypes(source, index):
    it = iter(pl.build_train_dataset(source, index, cfg(), seed=0))
    b = next(it)
    assert b["mouth"].shape == (4, T, 88, 88) and b["mouth"].dtype == np.uint8
    assert b["face"].shape == (4, T, FACE, FACE, 3) and b["face"].dtype == np.uint8
    assert b["logmel"].shape == (4, 4 * T, 80) and b["logmel"].dtype == np.float32
    assert b["teacher_audio"].shape == (4, T, K) and b["teacher_audio"].dtype == np.float32
    assert b["frame_mask"].shape == (4, T) and b["frame_mask"].dtype == np.float32
    for k in ("label", "video_fake", "audio_fake", "category", "method", "video_id",
              "window_start", "has_audio", "has_teacher", "valid"):
        assert b[k].shape == (4,) and b[k].dtype == np.int32, k
    # labels follow the record each window came from
    np.testing.assert_array_equal(b["label"],
                                  [int(METHODS[v % 3] != "real") for v in b["video_id"]])
    # a window never runs past the end of its video
    nf = np.array(LENGTHS)[b["video_id"]]
    np.testing.assert_array_equal(b["frame_mask"].sum(1), np.minimum(nf - b["window_start"], T))


def test_inputs_select_the_streams_decoded(source, index):
    full = take(iter(pl.build_train_dataset(source, index, cfg(), seed=6)), 3)
    part = take(iter(pl.build_train_dataset(
        source, index, cfg(inputs=("mouth", "logmel", "label")), seed=6)), 3)
    for f, p in zip(full, part):
        assert not {"face", "teacher_audio", "teacher_video"} & p.keys()
        assert set(f) - set(p) == {"face", "teacher_audio", "teacher_video"}
        for k in p:                      # same windows and augmentation draws
            np.testing.assert_array_equal(p[k], f[k], err_msg=k)


def test_train_is_deterministic_for_a_seed(source, index):
    a = take(iter(pl.build_train_dataset(source, index, cfg(), seed=3)), 5)
    b = take(iter(pl.build_train_dataset(source, index, cfg(), seed=3)), 5)
    c = take(iter(pl.build_train_dataset(source, index, cfg(), seed=4)), 5)
    assert_batches_equal(a, b)
    assert any(not np.array_equal(x["video_id"], y["video_id"]) or
               not np.array_equal(x["mouth"], y["mouth"]) for x, y in zip(a, c))


def test_each_epoch_is_a_permutation_reshuffled(source, index):
    n = len(source)
    it = iter(pl.build_train_dataset(source, index, cfg(augment=False), seed=1,
                                     local_batch_size=1))
    ids = [int(next(it)["video_id"][0]) for _ in range(3 * n)]
    epochs = [ids[i * n:(i + 1) * n] for i in range(3)]
    for e in epochs:
        assert sorted(e) == list(range(n))
    assert epochs[0] != epochs[1]                        # reshuffled every epoch


def test_two_hosts_read_disjoint_shards_covering_everything(source, index):
    seen = []
    for p in range(2):
        mine = pl.host_records(np.arange(len(source)), p, 2)
        it = iter(pl.build_train_dataset(source, index, cfg(augment=False), seed=0,
                                         process_index=p, process_count=2, local_batch_size=1))
        ids = [int(next(it)["video_id"][0]) for _ in range(len(mine))]
        assert sorted(ids) == sorted(mine.tolist())     # one epoch = each own record once
        seen.append(set(ids))
    assert not seen[0] & seen[1]
    assert seen[0] | seen[1] == set(range(len(source)))


def test_method_filter_leave_one_out(source, index):
    it = iter(pl.build_train_dataset(source, index, cfg(train_exclude_manipulations=("wav2lip",)),
                                     seed=0))
    held_out = index.method_names.index("wav2lip")
    methods = np.concatenate([next(it)["method"] for _ in range(6)])
    assert held_out not in methods and len(set(methods)) == 2
    with pytest.raises(ConfigError, match="not have"):
        pl.build_train_dataset(source, index, cfg(train_exclude_manipulations=("nope",)), seed=0)
    # a config written before the keys were renamed is refused, not silently unfiltered
    with pytest.raises(ConfigError, match="renamed config.data.train_exclude_manipulations"):
        pl.build_train_dataset(source, index, cfg(train_exclude_methods=("wav2lip",)), seed=0)


def test_state_resume_gives_the_same_next_batches(source, index):
    ds = pl.build_train_dataset(source, index, cfg(), seed=11)
    it = iter(ds)
    take(it, 3)
    state = it.get_state()
    json.dumps(state)                                    # storable in a checkpoint
    want = take(it, 4)
    fresh = iter(pl.build_train_dataset(source, index, cfg(), seed=11))
    fresh.set_state(state)
    assert_batches_equal(take(fresh, 4), want)


def test_state_resume_with_worker_processes(source, index):
    c = cfg(num_workers=2)
    it = iter(pl.build_train_dataset(source, index, c, seed=5))
    first = take(it, 3)
    state = it.get_state()
    want = take(it, 3)
    fresh = iter(pl.build_train_dataset(source, index, c, seed=5))
    fresh.set_state(state)
    assert_batches_equal(take(fresh, 3), want)
    # worker processes produce exactly what the in-process pipeline produces
    inproc = take(iter(pl.build_train_dataset(source, index, cfg(), seed=5)), 6)
    assert_batches_equal(first + want, inproc)


def test_augmentation_is_consistent_across_the_window(index):
    # a video whose frames are identical stays identical frame-to-frame after augmentation
    still = [make_example(0, 12)]
    for i in range(12):
        still[0]["mouth"][i] = still[0]["mouth"][0]
        still[0]["face"][i] = still[0]["face"][0]
    ex = still[0]
    rng_img = np.random.default_rng(0)
    mouth0 = rng_img.integers(0, 255, (1, 88, 88), dtype=np.uint8)
    ex["mouth"] = np.array(codec.encode_frames(np.repeat(mouth0, 12, 0), "png"), dtype=object)
    face0 = rng_img.integers(0, 255, (1, FACE, FACE, 3), dtype=np.uint8)
    ex["face"] = np.array(codec.encode_frames(np.repeat(face0, 12, 0), "png"), dtype=object)
    idx = SplitIndex.from_examples(still)
    it = iter(pl.build_train_dataset(still, idx, cfg(), seed=2, local_batch_size=1))
    changed = 0
    for _ in range(12):
        b = next(it)
        m, f = b["mouth"][0], b["face"][0]
        assert (m == m[:1]).all() and (f == f[:1]).all()
        changed += int(not np.array_equal(m[0], mouth0[0]))
    assert changed > 0                                   # some windows were augmented


# --------------------------------------------------------------------------- evaluation

def _eval(source, index, p=0, P=1, **kw):
    return list(pl.eval_batches_from_source(source, index, cfg(**kw), process_index=p,
                                            process_count=P, local_batch_size=4))


def test_eval_covers_every_window_once_in_order(source, index):
    batches = _eval(source, index)
    got = [(int(v), int(s)) for b in batches for v, s, ok in
           zip(b["video_id"], b["window_start"], b["valid"]) if ok]
    want = [(v, s) for v, n in enumerate(LENGTHS) for s in window_starts(n, T)]
    assert got == want
    assert_batches_equal(batches, _eval(source, index))  # deterministic
    last = batches[-1]
    pad = last["valid"] == 0
    assert pad.any() and (last["video_id"][pad] == -1).all() and (last["mouth"][pad] == 0).all()
    # windows carry the right frames
    for b in batches:
        for i in np.flatnonzero(b["valid"]):
            v, s = int(b["video_id"][i]), int(b["window_start"][i])
            n = min(T, LENGTHS[v] - s)
            np.testing.assert_array_equal(b["mouth"][i, :n, 10, 10],
                                          [_frame_value(v, f) for f in range(s, s + n)])


def test_eval_hosts_are_disjoint_and_equally_long(source, index):
    per_host = [_eval(source, index, p, 2) for p in range(2)]
    assert len(per_host[0]) == len(per_host[1])
    keys = [{(int(v), int(s)) for b in bs for v, s, ok in
             zip(b["video_id"], b["window_start"], b["valid"]) if ok} for bs in per_host]
    assert not keys[0] & keys[1]
    want = {(v, s) for v, n in enumerate(LENGTHS) for s in window_starts(n, T)}
    assert keys[0] | keys[1] == want


def test_eval_with_worker_process_matches_in_process(source, index):
    assert_batches_equal(_eval(source, index, num_workers=1), _eval(source, index))


# --------------------------------------------------------------------------- config errors

def test_config_errors_are_typed(source, index):
    with pytest.raises(ConfigError, match="batch_size"):
        pl.build_train_dataset(source, index, cfg(batch_size=3), seed=0, process_count=2)
    with pytest.raises(ConfigError, match="window"):
        pl.build_train_dataset(source, index, cfg(window=0), seed=0)
    with pytest.raises(ConfigError, match=r"cache_mb=-1 must be >= 0"):
        pl.build_train_dataset(source, index, cfg(cache_mb=-1), seed=0)
    with pytest.raises(ConfigError, match="required"):
        pl.cfg_get({"name": "x"}, "data_dir")
    with pytest.raises(ConfigError, match="process_index"):
        pl.host_records(np.arange(4), 2, 2)


# --------------------------------------------------------------------------- augmentation

def _img(h, w, c=None, seed=0):
    # smooth image: interpolation differences between libraries stay small
    yy, xx = np.mgrid[0:h, 0:w]
    base = 127 + 60 * np.sin(xx / 5.0 + seed) + 50 * np.cos(yy / 7.0)
    img = np.clip(base, 0, 255).astype(np.uint8)
    return np.repeat(img[..., None], c, -1) if c else img


def test_flip_matches_numpy():
    frames = np.stack([_img(88, 88, seed=s) for s in range(3)])
    out = aug.apply_aug(frames, aug.AugParams(op="flip"))
    np.testing.assert_array_equal(out, frames[:, :, ::-1])


def test_crop_matches_skimage_resize():
    frames = np.stack([_img(88, 88, seed=s) for s in range(2)])
    p = aug.AugParams(op="crop", crop_frac=0.75, crop_x=0.3, crop_y=0.8)
    out = aug.apply_aug(frames, p)
    y0, x0, h, w = aug.crop_box(88, 88, p)
    assert (h, w) == (66, 66) and x0 == round(0.3 * 22) and y0 == round(0.8 * 22)
    for i in range(2):
        ref = skimage.transform.resize(frames[i, y0:y0 + h, x0:x0 + w].astype(float), (88, 88),
                                       order=1, mode="edge", anti_aliasing=False)
        assert np.abs(out[i].astype(float) - ref)[4:-4, 4:-4].mean() < 1.5


def test_rotate_matches_skimage_rotate():
    frames = _img(88, 88)[None]
    out = aug.apply_aug(frames, aug.AugParams(op="rotate", angle_deg=12.0))
    # skimage rotates counter-clockwise about the centre ((w-1)/2): compare the interior.
    ref = skimage.transform.rotate(frames[0].astype(float), 12.0, order=1, preserve_range=True)
    diff = np.abs(out[0].astype(float) - ref)[20:-20, 20:-20]
    assert diff.mean() < 2.0
    assert (out[0][:3, :3] == 0).all()                   # zero border, as the reference


def test_same_relative_crop_on_mouth_and_face():
    import cv2
    big = _img(112, 112, c=3)
    small = cv2.resize(big, (88, 88), interpolation=cv2.INTER_AREA)

    def mismatch(p_big, p_small):
        out_big = cv2.resize(aug.apply_aug(big[None], p_big)[0], (88, 88),
                             interpolation=cv2.INTER_AREA)
        out_small = aug.apply_aug(small[None], p_small)[0]
        return np.abs(out_big.astype(float) - out_small.astype(float)).mean()

    p = aug.AugParams(op="crop", crop_frac=0.8, crop_x=0.5, crop_y=0.5)
    other = aug.AugParams(op="crop", crop_frac=0.8, crop_x=0.0, crop_y=1.0)
    # the same draw gives the same picture at both sizes (up to sub-pixel rounding),
    # far closer than a different draw does
    assert mismatch(p, p) < 6.0 and mismatch(p, p) < 0.25 * mismatch(p, other)


def test_sample_aug_params_ranges_and_op_frequencies():
    rng = np.random.default_rng(0)
    draws = [aug.sample_aug_params(rng) for _ in range(2000)]
    counts = {op: sum(d.op == op for d in draws) for op in aug.AUG_OPS}
    assert all(400 < c < 600 for c in counts.values()), counts   # uniform over 4 options
    assert all(0.7 <= d.crop_frac <= 1.0 for d in draws)
    assert all(-15.0 <= d.angle_deg <= 15.0 for d in draws)
    assert min(d.angle_deg for d in draws) < -14 and max(d.angle_deg for d in draws) > 14
    with pytest.raises(ValueError, match="unknown"):
        aug.sample_aug_params(rng, ops=("orig", "zoom"))


def test_frame_codecs_roundtrip():
    gray = np.stack([_img(88, 88, seed=s) for s in range(3)])
    rgb = np.stack([_img(32, 32, c=3, seed=s) for s in range(3)])
    rgb[..., 0] = 10                                      # channel order must survive
    np.testing.assert_array_equal(codec.decode_frames(codec.encode_frames(gray, "png"),
                                                     color=False), gray)
    back = codec.decode_frames(codec.encode_frames(rgb, "jpeg", jpeg_quality=95), color=True)
    assert np.abs(back.astype(int) - rgb.astype(int)).mean() < 3
    assert np.abs(back[..., 0].astype(int) - 10).mean() < 3
    with pytest.raises(ValueError, match="decodable"):
        codec.decode_frames([b"not an image"], color=False)


# --------------------------------------------------------------------------- record cache

class _CountingSource:
    """A source that counts how often each record is read."""

    def __init__(self, records):
        self.records = records
        self.reads = collections.Counter()

    def __len__(self):
        return len(self.records)

    def __getitem__(self, r):
        self.reads[r] += 1
        return self.records[r]


def test_record_cache_reads_each_record_once_and_changes_no_batch(source, index):
    n_batches = 12                      # 48 windows: over four epochs of the 11 videos
    uncached = _CountingSource(source)
    off = take(iter(pl.build_train_dataset(uncached, index, cfg(cache_mb=0), seed=7)),
               n_batches)
    counting = _CountingSource(source)
    on = take(iter(pl.build_train_dataset(counting, index, cfg(cache_mb=64), seed=7)),
              n_batches)
    assert_batches_equal(on, off)
    assert min(uncached.reads.values()) >= 3          # without it: a read per window
    assert set(counting.reads) == set(range(len(source)))
    assert max(counting.reads.values()) == 1           # with it: once


def test_record_cache_budget_read_only_records_and_dropped_streams(source):
    counting = _CountingSource(source)
    cache = pl.RecordCache(counting, streams=("mouth", "lips"), max_mb=64)
    ex = cache[5]
    # Streams the windows do not read are not kept; the rest are the source's values.
    assert not {"face", "logmel", "teacher_audio", "teacher_video"} & ex.keys()
    assert set(source[5]) - set(ex) == {"face", "logmel", "teacher_audio", "teacher_video"}
    assert [bytes(b) for b in ex["mouth"]] == [bytes(b) for b in source[5]["mouth"]]
    np.testing.assert_array_equal(ex["face_found"], source[5]["face_found"])
    assert cache[5] is ex and counting.reads[5] == 1
    with pytest.raises(ValueError, match="read-only"):
        ex["face_found"][0] = False                   # a window cannot change later epochs
    source[5]["face_found"][0] = source[5]["face_found"][0]   # the source's array is not
    # A budget smaller than the split: what fits is kept, the rest is read every time.
    one = sum(len(b) for b in source[5]["mouth"]) / 2**20
    small_src = _CountingSource(source)
    small = pl.RecordCache(small_src, streams=("mouth",), max_mb=2.5 * one)
    for _ in range(3):
        for r in range(len(source)):
            small[r]
    held, nbytes = small.cached
    assert 0 < held < len(source) and nbytes <= 2.5 * one * 2**20
    reads = small_src.reads
    assert sorted(reads.values()) == [1] * held + [3] * (len(source) - held)
    off_src = _CountingSource(source)
    off = pl.RecordCache(off_src, streams=("mouth",), max_mb=0)
    off[1], off[1]
    assert off.cached == (0, 0) and off_src.reads[1] == 2
