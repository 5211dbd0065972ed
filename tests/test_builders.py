"""Dataset builders: fake manual folders laid out like the real FakeAVCeleb and CMDFD trees
(made from generated clips), the generated synthetic benchmark, the real fixture clips
mixed with broken files, and reading every built dataset back in a fresh process without
TensorFlow (through tfds.data_source and the project's Grain loader)."""

from __future__ import annotations

import csv
import json
import pathlib
import shutil
import subprocess
import sys
import textwrap

import cv2
import numpy as np
import pytest
import tensorflow_datasets as tfds

import media_factory as mf
from avdetect import contract
from avdetect.data import build
from avdetect.data.builder import format_report
from avdetect.data.codec import decode_frames
from avdetect.errors import ConfigError
from avdetect.media.decode import decode, load_audio
from avdetect.preprocess.logmel import log_mel
from datasets.fakeavceleb import fakeavceleb

SECONDS = 1.2                      # 30 frames: short clips keep the tests fast


def standin_preprocess(task, face_size):
    """A fast stand-in for the face-tracking preprocessing (the builders' listing, labels,
    splits and audio handling are what these tests check): centre crops of the decoded
    frames and the real log-mel. Bad files raise the decoder's typed MediaErrors."""
    clip = decode(task.path)
    frames = clip.frames                                      # [T, H, W, 3]
    T, h, w = frames.shape[:3]
    s = min(h, w)
    sq = frames[:, (h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
    face = np.stack([cv2.resize(f, (face_size, face_size)) for f in sq])
    mouth = np.stack([cv2.resize(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY),
                                 (contract.MOUTH_SIZE, contract.MOUTH_SIZE)) for f in sq])
    has_audio = clip.audio is not None
    mel = (log_mel(clip.audio, num_frames=T) if has_audio
           else np.zeros((contract.MEL_PER_FRAME * T, contract.N_MELS), np.float32))
    return {"mouth": mouth, "face": face, "logmel": mel, "face_found": np.ones(T, bool),
            "boxes": np.zeros((T, 4), np.float32), "has_audio": has_audio, "info": clip.info,
            "params": {"standin": True, "face_size": face_size}}


def _clip(path: pathlib.Path, *, audio=True, hz=440.0, seed=0) -> pathlib.Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    mf.make_video(path, seconds=SECONDS, size=(64, 48), audio=audio, tone_hz=hz, seed=seed)
    return path


def _read(data_dir, name, split):
    return tfds.data_source(name, split=split, data_dir=str(data_dir))


def _ids(ds) -> list[str]:
    return [ds[i]["video_id"].decode() for i in range(len(ds))]


# ------------------------------------------------------------------------ FakeAVCeleb

FAV_HEADER = "source,target1,target2,method,category,type,race,gender,path,\n"
# identities: two from the reference test list, two not in it
FAV_ROWS = [  # (source, target1, method, category letter, type, race, gender, file)
    ("id00076", "-", "real", "A", "RealVideo-RealAudio", "African", "men", "00109.mp4"),
    ("id00166", "-", "real", "A", "RealVideo-RealAudio", "African", "men", "00010.mp4"),
    ("id07200", "-", "real", "A", "RealVideo-RealAudio", "Asian (South)", "men", "00045.mp4"),
    ("id03525", "-", "real", "A", "RealVideo-RealAudio", "Caucasian (American)", "men",
     "00048.mp4"),
    ("id00076", "id00476", "rtvc", "B", "RealVideo-FakeAudio", "African", "men",
     "00109_id00476_fake.mp4"),
    ("id07200", "id07194", "rtvc", "B", "RealVideo-FakeAudio", "Asian (South)", "men",
     "00045_id07194_fake.mp4"),
    ("id00166", "id00076", "faceswap", "C", "FakeVideo-RealAudio", "African", "men",
     "00010_id00076_faceswap.mp4"),
    ("id03525", "id04216", "wav2lip", "C", "FakeVideo-RealAudio", "Caucasian (American)",
     "men", "00048_id04216_wavtolip.mp4"),
    ("id07200", "id07210", "fsgan-wav2lip", "D", "FakeVideo-FakeAudio", "Asian (South)",
     "men", "00045_id07210_fsgan_wavtolip.mp4"),
    ("id00076", "id00166", "wav2lip", "D", "FakeVideo-FakeAudio", "African", "men",
     "00109_id00166_wavtolip.mp4"),
]
FAV_TEST_IDS = {"id07200", "id03525"}


def _fav_folder(row):
    return f"{row[4]}/{row[5]}/{row[6]}/{row[0]}"


@pytest.fixture(scope="module")
def fav_tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("fav") / "FakeAVCeleb_v1.2"
    lines = [FAV_HEADER]
    for i, row in enumerate(FAV_ROWS):
        _clip(root / _fav_folder(row) / row[7], hz=300 + 50 * i, seed=i)
        src, t1, method, letter, kind, race, gender, name = row
        lines.append(f"{src},{t1},-,{method},{letter},{kind},{race},{gender},{name},"
                     f"FakeAVCeleb/{_fav_folder(row)}\n")
    lines.append(lines[3])                                   # a duplicate row
    lines.append("id00076,id00999,-,wav2lip,D,FakeVideo-FakeAudio,African,men,"
                 "00109_id00999_wavtolip.mp4,FakeAVCeleb/FakeVideo-FakeAudio/African/men/"
                 "id00076\n")                                # its file is missing
    (root / "meta_data.csv").write_text("".join(lines))
    _clip(root / "FakeVideo-RealAudio/African/men/id00166/stray.mp4")   # not in the csv
    return root


@pytest.fixture(scope="module")
def fav_built(fav_tree, tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("fav_data")
    _, report = build.build("fakeavceleb/face112", data_dir=str(data_dir),
                            manual_dir=str(fav_tree.parent), workers=0,
                            preprocess_fn=standin_preprocess)
    return data_dir, report


def test_fakeavceleb_identity_split_and_labels(fav_built):
    data_dir, report = fav_built
    by_split = {s: _ids(_read(data_dir, "fakeavceleb/face112", s)) for s in ("train", "test")}
    rows = {f"{_fav_folder(r)}/{r[7][:-4]}": r for r in FAV_ROWS}
    assert sorted(by_split["train"] + by_split["test"]) == sorted(rows)
    for split, ids in by_split.items():
        for vid in ids:
            assert (rows[vid][0] in FAV_TEST_IDS) == (split == "test"), vid
    ds = _read(data_dir, "fakeavceleb/face112", "test")
    letters = {"A": "RVRA", "B": "RVFA", "C": "FVRA", "D": "FVFA"}
    for i in range(len(ds)):
        ex = ds[i]
        row = rows[ex["video_id"].decode()]
        assert contract.CATEGORIES[ex["category"]] == letters[row[3]]
        assert ex["label"] == int(row[3] != "A")
        assert ex["method"].decode() == row[2] and ex["identity"].decode() == row[0]
        assert json.loads(ex["attributes"])["race"] == row[5]
    meta = ds.dataset_info.metadata
    assert meta["source"]["test_identities"] == sorted(FAV_TEST_IDS)


def test_fakeavceleb_method_splits_hold_test_reals_and_one_method(fav_built):
    data_dir, report = fav_built
    test_reals = {f"{_fav_folder(r)}/{r[7][:-4]}" for r in FAV_ROWS
                  if r[3] == "A" and r[0] in FAV_TEST_IDS}
    for method in ("rtvc", "wav2lip", "fsgan-wav2lip"):
        ids = set(_ids(_read(data_dir, "fakeavceleb/face112",
                             fakeavceleb.method_split_name(method))))
        fakes = {f"{_fav_folder(r)}/{r[7][:-4]}" for r in FAV_ROWS
                 if r[2] == method and r[0] in FAV_TEST_IDS}
        assert fakes and ids == test_reals | fakes, method
    # faceswap has no test-identity fake here: no split for it
    assert "method_faceswap" not in report["splits"]
    # 10 % of a 2-identity group rounds to no validation identity: no validation split
    assert set(report["written"]) == {"train", "test", "method_rtvc", "method_wav2lip",
                                      "method_fsgan_wav2lip"}


def test_fakeavceleb_report_lists_every_problem(fav_built, fav_tree):
    _, report = fav_built
    kinds = {(p["kind"], pathlib.Path(p["path"]).name) for p in report["skipped"]}
    assert ("missing_file", "00109_id00999_wavtolip.mp4") in kinds
    assert ("duplicate_row", "00045.mp4") in kinds
    assert ("not_in_metadata", "stray.mp4") in kinds
    assert report["splits"]["train"]["good"] == report["written"]["train"]
    assert report["clips"] == len(FAV_ROWS) and report["skipped_clips"] == 0


def test_fakeavceleb_validation_identities_are_disjoint_from_train_and_test(fav_tree):
    cfg = fakeavceleb.FakeavcelebConfig(name="t", validation_fraction=0.5)
    listing = fakeavceleb.list_fakeavceleb(fav_tree, cfg)
    ids = {s: {listing.tasks[k].identity for k in keys} for s, keys in listing.splits.items()
           if not s.startswith("method_")}
    assert ids["test"] == FAV_TEST_IDS
    assert len(ids["validation"]) == 1 and ids["validation"] <= {"id00076", "id00166"}
    assert ids["train"] == {"id00076", "id00166"} - ids["validation"]
    for k in listing.splits["validation"]:                     # fakes follow their identity
        assert listing.tasks[k].identity in ids["validation"]
    assert any(listing.tasks[k].label for k in listing.splits["validation"])


def test_fakeavceleb_hashed_split_takes_a_fifth_of_each_group():
    groups = {("African", "men"): {f"id{i:05d}" for i in range(50)},
              ("Asian (East)", "women"): {f"id{i:05d}" for i in range(100, 130)}}
    a = fakeavceleb.hashed_test_ids(groups, seed=0)
    assert a == fakeavceleb.hashed_test_ids(groups, seed=0)
    assert len(a & groups[("African", "men")]) == 10
    assert len(a & groups[("Asian (East)", "women")]) == 6
    assert a != fakeavceleb.hashed_test_ids(groups, seed=1)


def test_fakeavceleb_without_manual_dir_says_what_to_download(tmp_path):
    with pytest.raises(ConfigError, match="meta_data.csv"):
        build.build("fakeavceleb/face112", data_dir=str(tmp_path), workers=0,
                    manual_dir=str(tmp_path), preprocess_fn=standin_preprocess)


# ------------------------------------------------------------------------ CMDFD

@pytest.fixture(scope="module")
def cmdfd_tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("cmdfd") / "CMDFD"
    _clip(root / "origin/id00001_AAAAAAAAAAA.mp4", hz=300, seed=1)
    _clip(root / "origin/id00002_BBBBBBB-BBB.mp4", hz=600, seed=2)
    _clip(root / "origin/id00003_CCCCCCCCCCC.mp4", hz=900, seed=3)
    # W2L ships without audio: borrowed from the origin clip of the audio id (id00002)
    _clip(root / "wav2lip/id00001-id00002.mp4", audio=False, seed=4)
    _clip(root / "wav2lip_Self/id00003-id00003.mp4", audio=False, seed=5)
    _clip(root / "VideoReTalk/id00001-id00002.mp4", hz=1200, seed=6)     # has its own audio
    # no origin clip of id00009: the same pair in another subset lends its audio
    _clip(root / "MakeItTalk/id00002-id00009.mp4", audio=False, seed=7)
    _clip(root / "Audio2Head/id00002-id00009.mp4", hz=1500, seed=8)
    return root


@pytest.fixture(scope="module")
def cmdfd_built(cmdfd_tree, tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("cmdfd_data")
    _, report = build.build("cmdfd/face112", data_dir=str(data_dir),
                            manual_dir=str(cmdfd_tree.parent), workers=0,
                            preprocess_fn=standin_preprocess)
    return data_dir, report


def test_cmdfd_subsets_share_the_real_clips(cmdfd_built):
    data_dir, report = cmdfd_built
    reals = {"origin/id00001_AAAAAAAAAAA", "origin/id00002_BBBBBBB-BBB",
             "origin/id00003_CCCCCCCCCCC"}
    want = {"w2l": {"wav2lip/id00001-id00002"}, "w2l_self": {"wav2lip_Self/id00003-id00003"},
            "vrt": {"VideoReTalk/id00001-id00002"}, "mit": {"MakeItTalk/id00002-id00009"},
            "a2h": {"Audio2Head/id00002-id00009"}}
    for split, fakes in want.items():
        ds = _read(data_dir, "cmdfd/face112", split)
        assert set(_ids(ds)) == reals | fakes, split
        for i in range(len(ds)):
            ex = ds[i]
            fake = ex["video_id"].decode() in fakes
            assert ex["label"] == int(fake) and ex["video_fake"] == fake
            assert contract.CATEGORIES[ex["category"]] == ("FVRA" if fake else "RVRA")
    assert report["clips"] == 3 + 5                 # every real clip preprocessed once
    missing = {p["path"].split("/")[-1] for p in report["skipped"]
               if p["kind"] == "missing_subset"}
    assert missing == {"videoretalk_self", "makeittalk_self", "audio2head_self"}
    assert set(report["written"]) == set(want)


def _example(data_dir, split, video_id):
    ds = _read(data_dir, "cmdfd/face112", split)
    return next(ds[i] for i in range(len(ds)) if ds[i]["video_id"].decode() == video_id)


def test_cmdfd_w2l_borrows_the_audio_of_its_audio_id(cmdfd_built, cmdfd_tree):
    data_dir, report = cmdfd_built
    ex = _example(data_dir, "w2l", "wav2lip/id00001-id00002")
    assert ex["has_audio"] and ex["audio_source"] == b"origin/id00002_BBBBBBB-BBB.mp4"
    T = ex["num_frames"]
    want = log_mel(load_audio(cmdfd_tree / "origin/id00002_BBBBBBB-BBB.mp4", num_frames=T),
                   num_frames=T)
    np.testing.assert_allclose(ex["logmel"].astype(np.float32), want, atol=0.02)
    # borrowed from the other subset's clip of the same pair when the origin is absent
    mit = _example(data_dir, "mit", "MakeItTalk/id00002-id00009")
    assert mit["has_audio"] and mit["audio_source"] == b"Audio2Head/id00002-id00009.mp4"
    a2h = _example(data_dir, "a2h", "Audio2Head/id00002-id00009")
    np.testing.assert_array_equal(mit["logmel"], a2h["logmel"])
    # a clip with its own audio keeps it
    vrt = _example(data_dir, "vrt", "VideoReTalk/id00001-id00002")
    assert vrt["has_audio"] and vrt["audio_source"] == b""
    own = log_mel(load_audio(cmdfd_tree / "VideoReTalk/id00001-id00002.mp4",
                             num_frames=vrt["num_frames"]), num_frames=vrt["num_frames"])
    np.testing.assert_allclose(vrt["logmel"].astype(np.float32), own, atol=0.02)
    notes = {n["key"]: n["note"] for n in report["notes"]}
    assert "origin/id00002_BBBBBBB-BBB.mp4" in notes["wav2lip/id00001-id00002"]


# ------------------------------------------------------------------------ real clips, broken files

@pytest.fixture(scope="module")
def mixed_built(realav_dir, tmp_path_factory):
    """The real fixture path (default face-tracking preprocessing, 2 worker processes) over
    a folder mixing good clips and broken files."""
    src = tmp_path_factory.mktemp("mixed_src")
    good = ["real_video-retalking_6.mp4", "fake_video-retalking_lnet_1.mp4",
            "fake_video-retalking_full_1.mp4"]
    for name in good:
        shutil.copy(realav_dir / name, src / name)
    mf.make_empty_file(src / "real_empty_1.mp4")
    mf.make_text_file(src / "real_text_1.mp4")
    mf.truncate_copy(realav_dir / "real_video-retalking_5.mp4", src / "real_truncated_1.mp4")
    mf.make_video(src / "real_noface_1.mp4", seconds=2.0, size=(96, 96))   # stripes only
    _clip(src / "real_unlisted_1.mp4")
    listed = good + ["real_empty_1.mp4", "real_text_1.mp4", "real_truncated_1.mp4",
                     "real_noface_1.mp4", "real_missing_1.mp4"]
    with open(realav_dir / "manifest.csv", newline="") as f:
        manifest = {r["file"]: r for r in csv.DictReader(f)}
    with open(src / "manifest.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["file", "label", "category"])
        w.writeheader()
        for name in listed:
            m = manifest.get(name, {"label": "real", "category": "real"})
            w.writerow({"file": name, "label": m["label"], "category": m["category"]})
    data_dir = tmp_path_factory.mktemp("mixed_data")
    _, report = build.build("realav/face112", data_dir=str(data_dir), manual_dir=str(src),
                            workers=2)
    return data_dir, report, good


def test_mixed_folder_keeps_every_good_clip_and_reports_the_broken(mixed_built):
    data_dir, report, good = mixed_built
    ds = _read(data_dir, "realav/face112", "test")
    assert sorted(_ids(ds)) == sorted(g[:-4] for g in good)
    kinds = {pathlib.Path(p["path"]).name: p["kind"] for p in report["skipped"]}
    assert kinds == {"real_empty_1.mp4": "empty_file", "real_text_1.mp4": "not_media",
                     "real_truncated_1.mp4": "corrupt", "real_noface_1.mp4": "no_face",
                     "real_missing_1.mp4": "missing_file",
                     "real_unlisted_1.mp4": "not_in_manifest"}
    assert all(p["reason"] for p in report["skipped"])
    assert report["internal_errors"] == 0 and report["written"] == {"test": len(good)}
    text = format_report(report)
    assert "real_text_1.mp4" in text and "not_media" in text
    on_disk = json.loads((pathlib.Path(report["report_path"])).read_text())
    assert len(on_disk["skipped"]) == 6
    # the real preprocessing's parameters are recorded in the metadata
    meta = ds.dataset_info.metadata
    assert meta["preprocessing"]["detector"].startswith("mediapipe")
    assert meta["preprocessing"]["alignment"]["ref_size"] == 256
    assert meta["encoding"]["face_size"] == 112 and meta["contract"]["n_mels"] == 80


def test_real_clip_example_matches_its_source(mixed_built, realav_dir):
    data_dir, _, _ = mixed_built
    ds = _read(data_dir, "realav/face112", "test")
    ex = next(ds[i] for i in range(len(ds))
              if ds[i]["video_id"] == b"real_video-retalking_6")
    T = ex["num_frames"]
    src = realav_dir / "real_video-retalking_6.mp4"
    assert T == 100 and len(ex["mouth"]) == T and len(ex["face"]) == T
    assert ex["logmel"].shape == (4 * T, 80) and ex["has_audio"]
    want = log_mel(load_audio(src, num_frames=T), num_frames=T)
    np.testing.assert_allclose(ex["logmel"].astype(np.float32), want, atol=0.02)
    assert decode_frames(ex["mouth"][:2], color=False).shape == (2, 88, 88)
    assert decode_frames(ex["face"][:2], color=True).shape == (2, 112, 112, 3)
    assert ex["face_found"].mean() > 0.5
    assert ex["method"] == b"real" and ex["label"] == 0
    lnet = next(ds[i] for i in range(len(ds))
                if ds[i]["video_id"] == b"fake_video-retalking_lnet_1")
    assert lnet["method"] == b"lnet" and lnet["label"] == 1


# ------------------------------------------------------------------------ synthetic benchmark

def test_synthetic_builder_reads_a_generator_output_folder(tmp_path):
    """The builder's side of the generator contract (meta_data.csv columns, splits, flags),
    on a folder laid out like the generator's output."""
    src = tmp_path / "gen"
    rows = [  # clip_id, split, label, category, method, identity, vf, af, sync
        ("c000", "train", "real", "RVRA", "real", "spk0", 0, 0, 0),
        ("c001", "train", "fake", "FVRA", "lipsync", "spk1", 1, 0, 1),
        ("c002", "val", "fake", "RVFA", "tts", "spk2", 0, 1, 0),
        ("c003", "test", "fake", "FVFA", "lipsync+tts", "spk0", 1, 1, 0),
        ("c004", "test", "fake", "RVRA", "shifted", "spk1", 0, 0, 1),   # sync-only fake
    ]
    lines = ["path,clip_id,split,label,category,method,identity,video_fake,audio_fake,"
             "sync_fake,offset_frames"]
    for i, (cid, split, label, cat, method, ident, vf, af, sync) in enumerate(rows):
        rel = f"{cat}/{method}/{ident}/{cid}.mp4"
        _clip(src / rel, hz=200 + 100 * i, seed=i)
        lines.append(f"{rel},{cid},{split},{label},{cat},{method},{ident},{vf},{af},{sync},"
                     f"{3 * sync}")
    lines.append("RVRA/real/spk9/gone.mp4,c009,test,real,RVRA,real,spk9,0,0,0,0")
    (src / "meta_data.csv").write_text("\n".join(lines) + "\n")
    _, report = build.build("synthetic_av/tiny", data_dir=str(tmp_path / "d"),
                            manual_dir=str(src), workers=0, preprocess_fn=standin_preprocess)
    assert report["written"] == {"train": 2, "validation": 1, "test": 2}
    assert [(p["kind"], pathlib.Path(p["path"]).name) for p in report["skipped"]] == [
        ("missing_file", "gone.mp4")]
    got = {}
    for split in ("train", "validation", "test"):
        ds = _read(tmp_path / "d", "synthetic_av/tiny", split)
        for i in range(len(ds)):
            got[ds[i]["video_id"].decode()] = (split, ds[i])
    for cid, split, label, cat, method, ident, vf, af, sync in rows:
        s, ex = got[cid]
        assert s == {"val": "validation"}.get(split, split)
        assert ex["method"].decode() == method
        assert ex["identity"].decode() == ident
        assert contract.CATEGORIES[ex["category"]] == cat
        assert (ex["video_fake"], ex["audio_fake"]) == (bool(vf), bool(af))
        assert ex["label"] == int(label == "fake")
        attrs = json.loads(ex["attributes"])
        assert attrs["sync_fake"] == str(sync) and attrs["offset_frames"] == str(3 * sync)


@pytest.fixture(scope="module")
def synthetic_built(tmp_path_factory):
    """The generated benchmark, generated on the fly by the builder (a small preset) and
    preprocessed by the real face-tracking pipeline."""
    from datasets.synthetic_av import generate as gen
    data_dir = tmp_path_factory.mktemp("synth_data")
    saved = dict(gen.PRESETS["tiny"])
    gen.PRESETS["tiny"] = {"num_clips": 12, "seconds": 1.2, "size": 192, "workers": 2,
                           "progress": False}
    try:
        _, report = build.build("synthetic_av/tiny", data_dir=str(data_dir), workers=0)
    finally:
        gen.PRESETS["tiny"] = saved
    return data_dir, report


def test_synthetic_build_keeps_every_generated_clip(synthetic_built):
    data_dir, report = synthetic_built
    src = pathlib.Path(report["source_root"])
    assert src.is_relative_to(data_dir / "avdetect_cache")   # generated into the cache
    with open(src / "meta_data.csv", newline="") as f:
        rows = {r["clip_id"]: r for r in csv.DictReader(f)}
    assert len(rows) == 12 and report["skipped"] == [] and report["clips"] == 12
    seen = set()
    for split in report["written"]:
        ds = _read(data_dir, "synthetic_av/tiny", split)
        for i in range(len(ds)):
            ex = ds[i]
            row = rows[ex["video_id"].decode()]
            seen.add(row["clip_id"])
            assert {"val": "validation"}.get(row["split"], row["split"]) == split
            assert ex["method"].decode() == row["method"]
            assert ex["identity"].decode() == row["identity"]
            assert contract.CATEGORIES[ex["category"]] == row["category"]
            assert ex["label"] == int(row["label"] == "fake")
            assert ex["num_frames"] == int(row["num_frames"]) == 30
            assert ex["face_found"].mean() > 0.5
    assert seen == set(rows)


# ------------------------------------------------------------------------ fresh process, no TF

_READER = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tensorflow_datasets as tfds
    from avdetect.data import pipeline
    from avdetect.data.windows import window_starts
    out = {}
    for name, data_dir, split in json.loads(sys.argv[1]):
        ds = tfds.data_source(name, split=split, data_dir=data_dir)
        meta = ds.dataset_info.metadata
        ids = [ds[i]["video_id"].decode() for i in range(len(ds))]
        cfg = dict(name=name, data_dir=data_dir, window=16, batch_size=4, train_split=split)
        idx = pipeline.load_split_index(cfg, split)
        windows = sum(len(window_starts(int(n), 16)) for n in idx.num_frames)
        got = [(int(v), int(s)) for b in pipeline.make_eval_batches(cfg, split)
               for v, s, ok in zip(b["video_id"], b["window_start"], b["valid"]) if ok]
        train = next(pipeline.make_train_iterator(cfg, seed=0))
        cats, methods = pipeline.label_vocabularies(cfg)
        assert list(methods) == meta["method_names"] and len(cats) == 4
        assert {idx.method_names[m] for m in train["method"]} <= set(idx.method)
        out[name + ":" + split] = dict(
            n=len(ds), ids_match_index=ids == list(idx.video_id),
            stored_ids=list(meta["index"][split]["video_id"]) == ids,
            windows=windows, eval_windows=len(got), distinct=len(set(got)),
            mouth=list(train["mouth"].shape), logmel=list(train["logmel"].shape))
    out["tensorflow_imported"] = "tensorflow" in sys.modules
    print("RESULT" + json.dumps(out))
""")


def test_every_built_dataset_reads_back_in_a_fresh_process_without_tensorflow(
        fav_built, cmdfd_built, mixed_built, synthetic_built):
    jobs = [("synthetic_av/tiny", str(synthetic_built[0]), "train"),
            ("fakeavceleb/face112", str(fav_built[0]), "train"),
            ("fakeavceleb/face112", str(fav_built[0]), "method_wav2lip"),
            ("cmdfd/face112", str(cmdfd_built[0]), "w2l"),
            ("realav/face112", str(mixed_built[0]), "test")]
    proc = subprocess.run([sys.executable, "-c", _READER, json.dumps(jobs)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT"))
    out = json.loads(line[len("RESULT"):])
    assert out.pop("tensorflow_imported") is False
    for key, r in out.items():
        assert r["n"] > 0 and r["ids_match_index"] and r["stored_ids"], key
        assert r["eval_windows"] == r["windows"] == r["distinct"], key
        assert r["mouth"] == [4, 16, 88, 88] and r["logmel"] == [4, 64, 80], key
