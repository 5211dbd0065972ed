"""The real-footage builders (`realtalk`, `videofolder`) and the build-time pseudo-fakes.

A small realtalk folder (symlinks to 6 short real GRID clips of 5 identities, 2 generated
fakes, the matching manifest rows) is built once with every pseudo-fake kind; each kind is
read back from the shards through ``tfds.data_source`` and checked against its SOURCE
example: audio windows, donors' samples, reversal, cross-correlation lag, the frames the
video side keeps, the log-mel against librosa, the TTS re-voice's silence and
loudness, and the re-rendered mouth's lip opening against the donor's speech energy. The clips are read from ../shared/realtalk; nothing made from them is kept.
"""

from __future__ import annotations

import csv
import json
import os
import pathlib

import librosa
import numpy as np
import pytest
import tensorflow_datasets as tfds

from avdetect import contract
from avdetect.data import build, pseudo_fakes, splits
from avdetect.data.clips import ClipTask, Listing
from avdetect.data.codec import decode_frames
from avdetect.data.revoice import speak
from avdetect.errors import ConfigError

REALTALK = pathlib.Path(__file__).resolve().parents[2] / "shared" / "realtalk"
SPF = contract.SAMPLES_PER_FRAME
# GRID clips (3 s each): grid_G has two clips (pf_other_sentence), the others one.
REALS = ("real_rizkiarm-LipNet_11.mp4", "real_rizkiarm-LipNet_7.mp4",       # grid_G, train
         "real_rizkiarm-LipNet_1.mp4", "real_rizkiarm-LipNet_3.mp4",        # grid_A, grid_C
         "real_rizkiarm-LipNet_4.mp4", "real_rizkiarm-LipNet_8.mp4")        # test: D, H
FAKES = ("fake_HistoriFy-ml-local-news_1.mp4", "fake_ym0523Lv-Get-Started-with-Wav2lip_1.mp4")


def _manifest_rows() -> list[dict[str, str]]:
    path = REALTALK / "manifest.csv"
    if not path.is_file():
        pytest.fail(f"realtalk folder missing: {path} (expected beside the repository)")
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def small_realtalk(tmp_path_factory) -> pathlib.Path:
    rows = _manifest_rows()
    want = set(REALS) | set(FAKES)
    picked = [r for r in rows if r["file"] in want]
    assert len(picked) == len(want)
    root = tmp_path_factory.mktemp("realtalk_small")
    with open(root / "manifest.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(picked)
    for r in picked:
        os.symlink(REALTALK / r["file"], root / r["file"])
    return root


@pytest.fixture(scope="module")
def built(small_realtalk, tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("tfds")
    builder, report = build.build("realtalk/face112", data_dir=str(data_dir),
                                  manual_dir=str(small_realtalk), workers=2)
    return data_dir, builder, report


def _examples(data_dir, split: str) -> dict[str, dict]:
    ds = tfds.data_source("realtalk/face112", split=split, data_dir=str(data_dir))
    out = {}
    for i in range(len(ds)):
        ex = dict(ds[i])
        ex["video_id"] = ex["video_id"].decode()
        ex["method"] = ex["method"].decode()
        ex["identity"] = ex["identity"].decode()
        ex["attributes"] = json.loads(ex["attributes"].decode())
        out[ex["video_id"]] = ex
    return out


@pytest.fixture(scope="module")
def examples(built):
    data_dir, builder, _ = built
    return {s: _examples(data_dir, s) for s in builder.info.splits}


def _all(examples) -> dict[str, dict]:
    return {k: ex for split in examples.values() for k, ex in split.items()}


def _pfs(examples, kind: str) -> list[tuple[str, dict, dict]]:
    """(split, pseudo-fake, its source example) of every pseudo-fake of ``kind``."""
    out = []
    for split, exs in examples.items():
        for ex in exs.values():
            if ex["method"] == kind:
                out.append((split, ex, exs[ex["attributes"]["pf_source"]]))
    assert out, f"no {kind} example was built"
    return out


# ------------------------------------------------------------------------------ splits

def test_split_of_is_a_stable_hash_with_the_stated_fractions():
    names = [f"person{i}" for i in range(3000)]
    got = [splits.split_of(n) for n in names]
    # independent reference: the rule as documented, recomputed with hashlib
    import hashlib
    for n, s in zip(names[:200], got[:200]):
        x = int.from_bytes(hashlib.sha256(f"{splits.DEFAULT_SALT}:{n}".encode()).digest()[:8],
                           "big") / 2.0**64
        assert s == ("train" if x < 0.6 else "validation" if x < 0.75 else "test")
    for name, frac in splits.DEFAULT_FRACTIONS.items():
        assert abs(got.count(name) / len(names) - frac) < 0.03
    assert splits.split_of("person1", salt="other") in splits.DEFAULT_FRACTIONS
    with pytest.raises(ConfigError):
        splits.split_of("x", {"train": 0.5, "test": 0.2})


def test_splits_are_identity_disjoint_and_recorded(built, examples):
    _, builder, report = built
    meta = builder.info.metadata
    rec = meta["source"]["split"]
    assert rec["salt"] == splits.DEFAULT_SALT and rec["fractions"] == splits.DEFAULT_FRACTIONS
    seen = {}
    for split, exs in examples.items():
        for ex in exs.values():
            assert splits.split_of(ex["identity"]) == split
            assert ex["identity"] in rec["identities"][split]
            seen.setdefault(ex["identity"], set()).add(split)
    assert all(len(s) == 1 for s in seen.values())
    # the index carries the source repository of every clip (leave-one-source-out)
    for split, cols in meta["index"].items():
        assert set(cols["source"]) == {ex["attributes"]["source_repo"]
                                       for ex in examples[split].values()}
    reals = {k for exs in examples.values() for k, ex in exs.items() if ex["method"] == "real"}
    assert reals == {f.rsplit(".", 1)[0] for f in REALS}
    assert report["internal_errors"] == 0


# ------------------------------------------------------------------------- pseudo-fakes

def test_every_kind_is_made_in_its_sources_split_only(examples):
    every = _all(examples)
    methods = {ex["method"] for ex in every.values()}
    assert set(pseudo_fakes.ALL_KINDS) <= methods
    for split, exs in examples.items():
        for ex in exs.values():
            a = ex["attributes"]
            if not ex["method"].startswith("pf_"):
                continue
            kind = pseudo_fakes.KINDS[ex["method"]]
            assert ex["label"] == 1
            assert (bool(ex["audio_fake"]), bool(ex["video_fake"])) == (kind.audio_fake,
                                                                        kind.video_fake)
            src = exs[a["pf_source"]]                  # the source is in the same split
            assert src["method"] == "real" and ex["identity"] == src["identity"]
            if a["pf_donor"]:
                donor = exs[a["pf_donor"]]             # so is the donor
                assert donor["method"] == "real"
                same = donor["identity"] == src["identity"]
                assert same == (ex["method"] == "pf_other_sentence")


def _mel_ref(audio_int16: np.ndarray) -> np.ndarray:
    """The contract's log-mel from librosa (module docstring of preprocess.logmel)."""
    y = audio_int16.astype(np.float32) / 32767.0
    m = librosa.feature.melspectrogram(y=y, sr=16000, n_fft=512, win_length=400,
                                       hop_length=160, n_mels=80, center=True,
                                       pad_mode="constant", power=2.0)
    return np.log(m.T[:len(y) // 160] + contract.LOG_FLOOR)


def test_pseudo_fake_logmel_is_recomputed_from_its_audio(examples):
    for kind in ("pf_shift", "pf_reverse", "pf_tts"):
        _, ex, _ = _pfs(examples, kind)[0]
        ref = _mel_ref(ex["audio"])
        got = ex["logmel"].astype(np.float32)
        assert got.shape == ref.shape == (4 * ex["num_frames"], 80)
        loud = ref > np.log(1e-3)                 # float16 storage: compare where it matters
        np.testing.assert_allclose(got[loud], ref[loud], rtol=0, atol=0.02)


def test_shift_moves_the_audio_by_k_frames(examples):
    ks = []
    for _, ex, src in _pfs(examples, "pf_shift"):
        k = ex["attributes"]["pf_params"]["k"]
        ks.append(k)
        T, L = src["num_frames"], ex["num_frames"]
        assert L == T - abs(k) and 3 <= abs(k) <= 12
        v0 = max(0, -k)
        # video: the source's frames [v0, v0 + L), byte for byte
        assert list(ex["face"]) == list(src["face"][v0:v0 + L])
        assert list(ex["mouth"]) == list(src["mouth"][v0:v0 + L])
        # audio: cross-correlation with the source audio under the same video frames
        # peaks at k frames
        a = ex["audio"].astype(np.float64)
        ref = src["audio"].astype(np.float64)
        lags = np.arange(-15, 16)
        score = [np.dot(a, ref[(v0 + lag) * SPF:(v0 + lag) * SPF + len(a)])
                 if 0 <= v0 + lag and (v0 + lag) * SPF + len(a) <= len(ref) else -np.inf
                 for lag in lags]
        assert lags[int(np.argmax(score))] == k
        np.testing.assert_array_equal(ex["audio"], src["audio"][(v0 + k) * SPF:
                                                                 (v0 + k + L) * SPF])
    assert any(k > 0 for k in ks) and any(k < 0 for k in ks), ks


def test_swap_and_other_sentence_carry_the_donors_samples(examples):
    for kind in ("pf_swap", "pf_other_sentence"):
        for split, ex, src in _pfs(examples, kind):
            donor = examples[split][ex["attributes"]["pf_donor"]]
            L = ex["num_frames"]
            assert L == min(src["num_frames"], donor["num_frames"])
            np.testing.assert_array_equal(ex["audio"], donor["audio"][:L * SPF])
            assert list(ex["face"]) == list(src["face"][:L])
            assert not np.array_equal(ex["audio"], src["audio"][:L * SPF])


def test_reverse_is_the_source_reversed(examples):
    for _, ex, src in _pfs(examples, "pf_reverse"):
        np.testing.assert_array_equal(ex["audio"], src["audio"][::-1])
        assert list(ex["face"]) == list(src["face"])


def test_freeze_holds_one_frame_and_keeps_the_audio(examples):
    for _, ex, src in _pfs(examples, "pf_freeze"):
        np.testing.assert_array_equal(ex["audio"], src["audio"])
        faces, src_faces = list(ex["face"]), list(src["face"])
        changed = [t for t in range(len(faces)) if faces[t] != src_faces[t]]
        assert changed, "nothing was frozen"
        start = changed[0] - 1                       # the held frame itself is unchanged
        assert all(faces[t] == src_faces[start] for t in changed)
        assert all(ex["mouth"][t] == src["mouth"][start] for t in changed)


def test_blend_mixes_mouth_crops_with_another_frame(examples):
    for _, ex, src in _pfs(examples, "pf_blend"):
        p = ex["attributes"]["pf_params"]
        np.testing.assert_array_equal(ex["audio"], src["audio"])
        got = decode_frames(list(ex["mouth"]), color=False).astype(np.float64)
        m = decode_frames(list(src["mouth"]), color=False).astype(np.float64)
        T = len(m)
        changed = np.flatnonzero(np.abs(got - m).reshape(T, -1).max(axis=1) > 0)
        assert changed.size > 0
        length = max(1, int(np.floor(p["len_frac"] * T)))
        start = int(np.floor(p["start_frac"] * (T - length + 1)))
        offset = max(1, int(np.floor(p["offset_frac"] * T)))
        seg = np.arange(start, start + length)
        ref = (1 - p["alpha"]) * m[seg] + p["alpha"] * m[(seg + offset) % T]
        np.testing.assert_allclose(got[seg], ref, atol=1.0)     # PNG: lossless but rounded
        rest = np.setdiff1d(np.arange(T), seg)
        np.testing.assert_array_equal(got[rest], m[rest])
        # The face crop: untouched outside the segment (same JPEG bytes); inside it, the
        # mouth crop's square (88 reference px around the lip centre, lips / 256 x S)
        # changes and everything outside it stays (up to JPEG re-encoding).
        faces, src_faces = list(ex["face"]), list(src["face"])
        assert all(faces[t] == src_faces[t] for t in rest)
        f_new = decode_frames([faces[t] for t in seg], color=True).astype(np.float64)
        f_old = decode_frames([src_faces[t] for t in seg], color=True).astype(np.float64)
        S = f_new.shape[1]
        yy, xx = np.mgrid[0:S, 0:S] + 0.5
        inside_diff, outside_diff = [], []
        for i, t in enumerate(seg):
            c = src["lips"][t].astype(np.float64).mean(axis=0) * S
            half = 88 / 256 * S / 2
            cheb = np.maximum(np.abs(xx - c[0]), np.abs(yy - c[1]))
            d = np.abs(f_new[i] - f_old[i]).mean(axis=-1)
            inside_diff.append(d[cheb < half - 1].mean())
            outside_diff.append(d[cheb > half + 2])
        outside = np.concatenate(outside_diff)
        assert outside.mean() < 1.0 and np.percentile(outside, 99) <= 6, outside.mean()
        assert np.mean(inside_diff) > 2 * outside.mean() + 1.0, np.mean(inside_diff)


def _opening_ref(lips: np.ndarray) -> np.ndarray:
    """Inner-lip gap (mesh points 13-14: lips[:, 14], lips[:, 18]) / mouth width (corners
    61-291: lips[:, 0], lips[:, 6]), the stills' mouth-opening measure, in NumPy."""
    lips = lips.astype(np.float64)
    return (np.hypot(*(lips[:, 14] - lips[:, 18]).T)
            / np.hypot(*(lips[:, 0] - lips[:, 6]).T))


def _envelope_db(audio: np.ndarray, T: int) -> np.ndarray:
    """Speech energy per video frame (dB of the frame RMS), in NumPy."""
    f = audio[:T * SPF].astype(np.float64).reshape(T, SPF)
    return 10 * np.log10(np.mean(f * f, axis=1) + 1.0)


def test_rerender_moves_the_lips_to_the_donors_speech(examples):
    for split, ex, src in _pfs(examples, "pf_rerender"):
        donor = examples[split][ex["attributes"]["pf_donor"]]
        assert donor["identity"] != src["identity"]
        T = ex["num_frames"]
        assert T == min(src["num_frames"], donor["num_frames"])
        # the clip's own audio, bit for bit (a prefix when the donor is shorter)
        np.testing.assert_array_equal(ex["audio"], src["audio"][:T * SPF])
        assert ex["has_lips"] and ex["lips"].shape == (T, 20, 2)
        opening = _opening_ref(ex["lips"])
        assert opening.std() > 0.01, "the re-rendered mouth does not move"
        to_donor = np.corrcoef(opening, _envelope_db(donor["audio"], T))[0, 1]
        to_source = np.corrcoef(opening, _envelope_db(src["audio"], T))[0, 1]
        # (GRID sentences share a silence-speech-silence shape, so the source's envelope
        # correlates too, less)
        assert to_donor > 0.8 and to_donor > to_source, (to_donor, to_source)
        # the mouth width follows the donor's own lips (the energy drive has none), and
        # the points jitter like landmarks (second difference over time not zero)
        def width(lips):
            return np.hypot(*(lips[:T, 0].astype(np.float64) - lips[:T, 6]).T)
        assert np.corrcoef(width(ex["lips"]), width(donor["lips"]))[0, 1] > 0.5
        second = ex["lips"][1:-1].astype(np.float64) - 0.5 * (ex["lips"][:-2] + ex["lips"][2:])
        assert 0.05 < np.median(np.abs(second)) * 256 < 2.0
        # the pixels moved with the lips: the mouth crops' darkness (the painted opening)
        # follows the new opening
        mouth = decode_frames(list(ex["mouth"]), color=False).astype(np.float64)
        dark = (mouth[:, 30:70, 20:68] < 60).mean(axis=(1, 2))
        assert np.corrcoef(dark, opening)[0, 1] > 0.5
        # the face crop above the mouth region is the source's (up to JPEG re-encoding):
        # rows above the lip line minus 0.3 face sizes (the renderer's region starts
        # there; face size 1.95 eye distances = 1.95 x 96 / 256 of the crop)
        faces = decode_frames(list(ex["face"]), color=True).astype(np.float64)
        src_faces = decode_frames(list(src["face"][:T]), color=True).astype(np.float64)
        S = faces.shape[1]
        top = int((src["lips"][:T, :, 1].min() - 0.3 * 1.95 * 96 / 256) * S)
        assert top > S // 4
        d_top = np.abs(faces[:, :top] - src_faces[:, :top])
        assert d_top.mean() < 1.0 and np.percentile(d_top, 99) <= 6, d_top.mean()
        lo = int(src["lips"][:T, :, 1].mean() * S)
        d_mouth = np.abs(faces[:, lo - 6:lo + 6] - src_faces[:, lo - 6:lo + 6]).mean()
        assert d_mouth > 3 * d_top.mean() + 1.0, d_mouth


def _voiced_rms_ref(x: np.ndarray) -> float:
    """RMS over the voiced 20 ms frames as revoice.voiced_frames documents them,
    written out again in plain NumPy."""
    x = x.astype(np.float64)
    f = x[:len(x) // 320 * 320].reshape(-1, 320)
    db = 10 * np.log10(np.mean(f * f, axis=1) + 1e-10)
    loud, floor = np.percentile(db, 95), np.percentile(db[db > -90], 10)
    keep = db > max(loud - 35, min(floor + 10, loud - 6))
    return float(np.sqrt(np.mean(f[keep] ** 2)))


def _loud_rms(x: np.ndarray) -> float:
    """A second, cruder loudness: RMS of the frames within 30 dB of the loudest one."""
    x = x.astype(np.float64)
    f = x[:len(x) // 320 * 320].reshape(-1, 320)
    e = np.mean(f * f, axis=1)
    return float(np.sqrt(np.mean(f[e > e.max() * 1e-3] ** 2)))


def _db(a: float, b: float) -> float:
    return float(20 * np.log10(a / b))


def test_tts_revoice_keeps_silence_and_loudness(examples):
    for _, ex, src in _pfs(examples, "pf_tts"):
        assert ex["num_frames"] == src["num_frames"]
        assert not np.array_equal(ex["audio"], src["audio"])
        assert ex["audio_source"].decode().startswith("tts:en-us+")
        lead, trail = contract.digital_silence(ex["audio"])
        s_lead, s_trail = contract.digital_silence(src["audio"])
        assert abs(lead - s_lead) <= 1 and abs(trail - s_trail) <= 1
        assert abs(_db(_voiced_rms_ref(ex["audio"]), _voiced_rms_ref(src["audio"]))) < 1.0
        assert abs(_db(_loud_rms(ex["audio"]), _loud_rms(src["audio"]))) < 2.5


def test_revoice_over_digital_silence(examples):
    """A source with long leading/trailing digital silence (a real clip padded with zeros,
    as FakeAVCeleb's fakes are): the re-voiced clip has the same silent runs."""
    _, _, src = _pfs(examples, "pf_tts")[0]
    pad_a, pad_b = 17 * SPF, 9 * SPF
    audio = np.concatenate([np.zeros(pad_a, np.int16), src["audio"],
                            np.zeros(pad_b, np.int16)])
    T = len(audio) // SPF
    clip = {"audio": audio, "logmel": np.zeros((4 * T, 80), np.float32),
            "face_found": np.ones(T, bool), "boxes": np.zeros((T, 4), np.float32)}
    rng = np.random.default_rng(0)
    speech = speak("place blue at four now", "en-us+f3", 2.0, rng)
    out = pseudo_fakes.revoice(clip, speech, rng)
    assert contract.digital_silence(out["audio"]) == contract.digital_silence(audio)
    assert contract.digital_silence(audio)[0] >= 17
    assert abs(_db(_voiced_rms_ref(out["audio"]), _voiced_rms_ref(audio))) < 1.0
    np.testing.assert_allclose(out["logmel"], _mel_ref(out["audio"]), atol=1e-3)


def test_planning_is_deterministic_and_skips_lonely_identities():
    def listing():
        lst = Listing()
        for key, ident, split in (("a1", "A", "train"), ("a2", "A", "train"),
                                  ("b1", "B", "train"), ("c1", "C", "test")):
            lst.add(ClipTask(key=key, path=f"/x/{key}.mp4", rel_path=f"{key}.mp4", label=0,
                             video_fake=False, audio_fake=False, method="real",
                             identity=ident), split)
        pseudo_fakes.add_pseudo_fakes(lst, pseudo_fakes.Options(per_kind=2))
        return lst
    one, two = listing(), listing()
    assert one.tasks == two.tasks and one.splits == two.splits
    # c1 is alone in its split: no donor for swap / other-sentence / re-render, noted,
    # not dropped
    assert not any(k.startswith(("c1__pf_swap", "c1__pf_other", "c1__pf_rerender"))
                   for k in one.tasks)
    assert sum("c1" == n["key"] for n in one.notes) == 6
    # b1's other-sentence has no donor either; its swaps and re-renders come from A
    for kind in ("pf_swap", "pf_rerender"):
        assert {one.tasks[k].derive["donor"] for k in one.tasks
                if k.startswith(f"b1__{kind}")} <= {"a1", "a2"}
    assert all(one.tasks[k].derive["donor"] == "a2"
               for k in one.tasks if k.startswith("a1__pf_other_sentence"))
    ks = [one.tasks[k].derive["params"]["k"] for k in one.tasks if "pf_shift" in k]
    assert all(3 <= abs(k) <= 12 for k in ks)
    # a clip that could not be preprocessed gives no pseudo-fake and is nobody's donor
    lst = Listing()
    for key, ident in (("a1", "A"), ("b1", "B"), ("c1", "C")):
        lst.add(ClipTask(key=key, path=f"/x/{key}.mp4", rel_path=f"{key}.mp4", label=0,
                         video_fake=False, audio_fake=False, method="real",
                         identity=ident), "train")
    pseudo_fakes.add_pseudo_fakes(lst, pseudo_fakes.Options(per_kind=3), usable={"a1", "b1"})
    derived = [t for t in lst.tasks.values() if t.derive]
    assert derived and {t.derive["source"] for t in derived} == {"a1", "b1"}
    assert "c1" not in {t.derive["donor"] for t in derived}


def test_missing_manifest_names_the_folder(tmp_path):
    with pytest.raises(ConfigError, match=str(tmp_path)):
        build.build("realtalk/nopf", data_dir=str(tmp_path / "d"), manual_dir=str(tmp_path))


# ------------------------------------------------------------------------- videofolder

@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> pathlib.Path:
    root = tmp_path_factory.mktemp("videos")
    (root / "id001" / "yt_a").mkdir(parents=True)
    (root / "id002").mkdir()
    os.symlink(REALTALK / REALS[2], root / "id001" / "yt_a" / "00001.mp4")
    os.symlink(REALTALK / REALS[4], root / "id002" / "00001.MOV")
    (root / "id002" / "broken.mp4").write_bytes(b"not a video at all")
    return root


def test_videofolder_without_csv(folder, tmp_path):
    builder, report = build.build("videofolder/nopf", data_dir=str(tmp_path),
                                  manual_dir=str(folder), workers=0)
    idx = builder.info.metadata["index"]
    rows = {v: (s, i, m) for s, c in idx.items()
            for v, i, m in zip(c["video_id"], c["identity"], c["method"])}
    assert rows["id001/yt_a/00001.mp4"] == (splits.split_of("id001"), "id001", "real")
    assert rows["id002/00001.MOV"] == (splits.split_of("id002"), "id002", "real")
    skipped = {pathlib.Path(p["path"]).name: p["kind"] for p in report["skipped"]}
    assert skipped == {"broken.mp4": "not_media"}


def test_videofolder_with_csv(folder, tmp_path):
    root = tmp_path / "labelled"
    root.mkdir()
    for p in folder.rglob("*"):
        if p.is_symlink() or p.is_file():
            dest = root / p.relative_to(folder)
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(os.readlink(p) if p.is_symlink() else p, dest)
    os.symlink(REALTALK / FAKES[0], root / "fake1.mp4")
    (root / "labels.csv").write_text(
        "file,label,method,identity\n"
        "id001/yt_a/00001.mp4,real,,\n"
        "fake1.mp4,fake,wav2lip,anchor\n"
        "id002/00001.MOV,maybe,,\n"            # bad label: listed, not used
        "missing.mp4,real,,x\n")               # missing file: listed
    builder, report = build.build("videofolder/nopf", data_dir=str(tmp_path / "d"),
                                  manual_dir=str(root), workers=0)
    idx = builder.info.metadata["index"]
    rows = {v: (i, m, l) for c in idx.values()
            for v, i, m, l in zip(c["video_id"], c["identity"], c["method"], c["label"])}
    assert rows == {"id001/yt_a/00001.mp4": ("id001", "real", 0),
                    "fake1.mp4": ("anchor", "wav2lip", 1)}
    kinds = sorted((pathlib.Path(p["path"]).name, p["kind"]) for p in report["skipped"])
    assert kinds == [("00001.MOV", "bad_label"), ("broken.mp4", "not_in_csv"),
                     ("missing.mp4", "missing_file")]


def test_videofolder_requires_a_manual_dir(tmp_path):
    with pytest.raises(ConfigError, match="needs --manual_dir"):
        build.build("videofolder/nopf", data_dir=str(tmp_path))


def test_silence_table_of_the_build(built, examples):
    data_dir, builder, _ = built
    table = {r["method"]: r for r in pseudo_fakes.silence_table(
        str(data_dir), "realtalk/face112", list(builder.info.splits))}
    for method, r in table.items():
        leads = [contract.digital_silence(ex["audio"])[0]
                 for ex in _all(examples).values() if ex["method"] == method]
        assert r["clips"] == len(leads) and r["lead_mean"] == pytest.approx(np.mean(leads))
    assert table["pf_tts"]["max_silence_diff_to_source"] <= 1
    assert table["pf_freeze"]["max_silence_diff_to_source"] == 0
    assert table["pf_tts"]["mean_abs_db_to_source"] < 1.0


def test_teacher_posteriors_follow_the_streams():
    """A derived clip keeps a teacher side only where its stream is a window of the
    source's (or the donor's) stream, re-indexed; other sides are zeros, flagged absent."""
    from avdetect.data.derived_clips import _carry_teacher

    rng = np.random.default_rng(0)
    T, K = 40, 5

    def entry():
        return {"teacher_audio": rng.random((T, K), np.float32),
                "teacher_video": rng.random((T, K), np.float32),
                "has_teacher": np.bool_(True), "has_teacher_audio": np.bool_(True),
                "has_teacher_video": np.bool_(True)}
    src, donor = entry(), entry()
    clip = {"audio": np.zeros(T * SPF, np.int16), "logmel": np.zeros((4 * T, 80), np.float32),
            "face_found": np.ones(T, bool), "boxes": np.zeros((T, 4), np.float32)}
    out, _ = _carry_teacher(src, None, pseudo_fakes.shift_audio(clip, 5))
    np.testing.assert_array_equal(out["teacher_audio"], src["teacher_audio"][5:])
    np.testing.assert_array_equal(out["teacher_video"], src["teacher_video"][:T - 5])
    assert out["has_teacher"] and out["has_teacher_audio"]
    donor_audio = np.zeros(30 * SPF, np.int16)
    out, _ = _carry_teacher(src, donor, pseudo_fakes.replace_audio(clip, donor_audio))
    np.testing.assert_array_equal(out["teacher_audio"], donor["teacher_audio"][:30])
    out, _ = _carry_teacher(src, None, pseudo_fakes.reverse_audio(clip))
    assert not out["has_teacher_audio"] and not out["teacher_audio"].any()
    assert out["has_teacher_video"] and not out["has_teacher"]
    out, _ = _carry_teacher(src, None, pseudo_fakes.freeze(clip, 3, 10))
    assert out["has_teacher_audio"] and not out["has_teacher_video"]
