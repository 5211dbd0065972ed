"""The synthetic benchmark generator (datasets/synthetic_av): files, metadata, splits,
determinism, and that every manipulation changes what it claims - measured, where
possible, from the decoded mp4 files (PyAV through avdetect.media.decode), not from the
generator's own bookkeeping.

One small benchmark (15 clips of 3 s: 6 real, one of each of the 9 fake methods) is
generated once per session with 2 worker processes. The audio-visual correlations used
below are those of espeak speech against a rendered mouth (about 0.4-0.7 for matching
pairs); the margins were set from 10 clips of each kind (lipsync, voiceclone, desync)
generated with another seed, where all held.
"""

from __future__ import annotations

import csv
import json
import pathlib

import av
import cv2
import librosa
import numpy as np
import pytest

from avdetect import contract
from avdetect.data import splits
from avdetect.errors import ConfigError, FileMissingError
from avdetect.media.decode import decode, iter_frames
from avdetect.preprocess.face_detect import detect_largest_face
from avdetect.teachers import alphabet

from datasets.synthetic_av import faces, generate as gen, plan as plan_lib, still_frames, tts
from datasets.synthetic_av import visemes
from datasets.synthetic_av.methods import CATEGORY_FOLDERS, FAKE_METHODS, METHODS

SECONDS = 3.0
SIZE = 160
T = int(SECONDS * contract.VIDEO_FPS)            # 75 frames
KW = dict(num_clips=15, real_fraction=0.4, seed=0, seconds=SECONDS)
SHARED = pathlib.Path(__file__).resolve().parents[2] / "shared"
REALTALK = SHARED / "realtalk"
FIXTURES = SHARED / "fixtures" / "realav"


@pytest.fixture(scope="session")
def bench(tmp_path_factory) -> pathlib.Path:
    out = tmp_path_factory.mktemp("synthetic_av")
    gen.generate(out, size=SIZE, workers=2, progress=False, **KW)
    return out


@pytest.fixture(scope="session")
def rows(bench) -> dict[str, dict[str, str]]:
    with open(bench / "meta_data.csv", newline="") as f:
        return {r["clip_id"]: r for r in csv.DictReader(f)}


@pytest.fixture(scope="session")
def clip(bench, rows):
    """clip(clip_id) -> (frames [T,H,W,3], audio [N], truth dict), decoded once."""
    cache: dict = {}

    def load(cid: str):
        if cid not in cache:
            path = bench / rows[cid]["path"]
            decoded = decode(path)
            with np.load(path.with_suffix(".npz")) as z:
                truth = {k: z[k] for k in z.files}
            cache[cid] = (decoded.frames, decoded.audio, truth)
        return cache[cid]
    return load


def by_method(rows, method: str) -> dict[str, str]:
    [row] = [r for r in rows.values() if r["method"] == method]
    return row


# --- measurements on decoded media --------------------------------------------------------

def _crop(gray: np.ndarray, box) -> np.ndarray:
    """Pixels of an (x, y, w, h) box, clipped to the image (a face framed near the top
    edge has y < 0, which would otherwise slice from the bottom)."""
    x, y, w, h = box
    hh, ww = gray.shape
    return gray[max(0, int(round(y))):min(hh, int(round(y + h))),
                max(0, int(round(x))):min(ww, int(round(x + w)))]


def mouth_darkness(frames: np.ndarray, truth: dict) -> np.ndarray:
    """Per frame: 1 - mean grey of the mouth box / median grey of the face (the opening
    darkens the box). A mean, not a count of pixels under a threshold: a beard or
    moustache in the box then adds a constant instead of threshold flicker."""
    out = []
    for f, mouth_box, face_box in zip(frames, truth["mouth_box"], truth["face_box"]):
        g = cv2.cvtColor(f, cv2.COLOR_RGB2GRAY).astype(np.float32)
        out.append(1.0 - _crop(g, mouth_box).mean() / np.median(_crop(g, face_box)))
    return np.array(out)


def log_energy(audio: np.ndarray, hop: int = contract.SAMPLES_PER_FRAME) -> np.ndarray:
    """log RMS per hop (per video frame by default) of decoded audio."""
    n = len(audio) // hop
    return np.log(np.sqrt(np.mean(audio[:n * hop].reshape(n, hop) ** 2, axis=1)) + 1e-4)


def jaw_cue(audio: np.ndarray, num_frames: int) -> np.ndarray:
    """An acoustic cue of jaw opening per video frame: the spectral centroid of the F1
    region (250-1100 Hz), which rises as the jaw opens (open vowels have a high first
    formant); frames without speech get the clip's lowest value. More specific to what
    was said than the energy envelope, whose speech/pause pattern two utterances share."""
    spf = contract.SAMPLES_PER_FRAME
    x = audio[:num_frames * spf].reshape(num_frames, spf) * np.hanning(spf)
    power = np.abs(np.fft.rfft(x, axis=1)) ** 2                         # [T, 321]
    freq = np.fft.rfftfreq(spf, 1 / contract.AUDIO_SR)
    band = (freq >= 250) & (freq <= 1100)
    centroid = (power[:, band] * freq[band]).sum(1) / (power[:, band].sum(1) + 1e-12)
    energy = np.log(power.sum(1) + 1e-9)
    speech = energy > energy.min() + 0.5 * (energy.max() - energy.min())
    return np.where(speech, centroid, centroid[speech].min())


def lag_curve(x: np.ndarray, y: np.ndarray, max_lag: int) -> np.ndarray:
    """corr(x[t], y[t + L]) for L = -max_lag..max_lag (float [2 max_lag + 1])."""
    def one(lag):
        a, b = (x[:len(x) - lag], y[lag:]) if lag >= 0 else (x[-lag:], y[:len(y) + lag])
        return np.corrcoef(a, b)[0, 1]
    return np.array([one(lag) for lag in range(-max_lag, max_lag + 1)])


def best_lag(x: np.ndarray, y: np.ndarray, max_lag: int) -> int:
    """Lag L maximising corr(x[t], y[t + L])."""
    return int(np.argmax(lag_curve(x, y, max_lag))) - max_lag


def packets(path: pathlib.Path, kind: str) -> list[bytes]:
    with av.open(str(path)) as c:
        stream = c.streams.video[0] if kind == "video" else c.streams.audio[0]
        return [bytes(p) for p in c.demux(stream) if p.size]


def corr(a, b) -> float:
    return float(np.corrcoef(a, b)[0, 1])


# --- files and metadata ----------------------------------------------------------------

def test_every_clip_is_real_h264_aac_at_contract_rates(bench, rows):
    for r in rows.values():
        with av.open(str(bench / r["path"])) as c:
            v, a = c.streams.video[0], c.streams.audio[0]
            assert v.codec_context.name == "h264" and a.codec_context.name == "aac"
            assert float(v.average_rate) == contract.VIDEO_FPS
            assert (v.width, v.height) == (SIZE, SIZE)
            assert a.sample_rate == contract.AUDIO_SR and a.layout.name == "mono"
            assert sum(1 for _ in c.decode(video=0)) == T == int(r["num_frames"])


def test_tree_metadata_and_alphabet(bench, rows):
    assert len(rows) == 15
    assert {r["method"] for r in rows.values()} == {"real", *FAKE_METHODS}
    assert sum(r["label"] == "real" for r in rows.values()) == 6
    for r in rows.values():
        m = METHODS[r["method"]]
        assert r["path"] == (f"{CATEGORY_FOLDERS[r['category']]}/{r['method']}/"
                             f"{r['identity']}/{r['clip_id']}.mp4")
        assert (bench / r["path"]).with_suffix(".npz").is_file()
        assert r["category"] == contract.category_of(r["video_fake"] == "1",
                                                     r["audio_fake"] == "1")
        assert r["category"] == m.category
        assert (r["label"] == "fake") == (r["method"] != "real")
        assert (r["source_clip_id"] == "") == (r["method"] == "real")
    assert by_method(rows, "desync")["category"] == "RVFA"
    assert by_method(rows, "desync")["sync_fake"] == "1"
    assert by_method(rows, "lipsync")["category"] == "FVRA"
    assert by_method(rows, "faceswap+voiceclone")["category"] == "FVFA"
    alpha = json.loads((bench / "alphabet.json").read_text())
    assert alpha["visemes"] == list(alphabet.VISEMES)
    assert alpha["phones"][alpha["silence_phone"]] == "SIL"
    for p, v in alpha["phone_to_viseme"].items():
        assert alphabet.phone_to_viseme(p, "arpabet") == v


def test_ground_truth_arrays(clip, rows):
    for cid, r in rows.items():
        _, _, t = clip(cid)
        for k in ("phone", "viseme", "video_phone", "video_viseme", "mouth_open",
                  "video_manipulated", "audio_manipulated", "blink"):
            assert t[k].shape == (T,), k
        assert t["mouth_center"].shape == (T, 2) and t["face_box"].shape == (T, 4)
        m = METHODS[r["method"]]
        assert t["video_manipulated"].all() == m.video_fake
        assert t["audio_manipulated"].all() == m.audio_fake
        assert str(t["region"]) == m.region
        # viseme tracks are the shared alphabet's mapping of the phone tracks
        names = [tts.PHONES[p] for p in t["phone"]]
        assert list(t["viseme"]) == [alphabet.VISEME_INDEX[alphabet.phone_to_viseme(n)]
                                     for n in names]


# --- determinism --------------------------------------------------------------------------

def test_same_seed_same_files_in_another_process_order(bench, rows, tmp_path):
    """Re-render a few clips here, in this process and in another order than the 2-worker
    run did: identical rows, identical npz arrays, identical mp4 bytes."""
    identities, specs = gen.plan(**KW)
    stills = {s.name: s for s in faces.load_stills()}
    chosen = [s for s in specs if s.method in ("voiceconvert", "faceswap")][::-1]
    chosen.append(next(s for s in specs if s.method == "real" and s.index > 2))
    for spec in chosen:
        row = gen.write_clip(spec, tmp_path, stills, SIZE, T)
        assert row == rows[spec.clip_id]
        a, b = bench / row["path"], tmp_path / row["path"]
        assert a.read_bytes() == b.read_bytes()
        with np.load(a.with_suffix(".npz")) as za, np.load(b.with_suffix(".npz")) as zb:
            assert za.files == zb.files
            for k in za.files:
                np.testing.assert_array_equal(za[k], zb[k])


def test_plan_depends_on_the_seed_only():
    first, again, other = (gen.plan(**{**KW, "seed": s}) for s in (0, 0, 1))
    assert first == again
    assert [s.take.text for s in first[1]] != [s.take.text for s in other[1]]
    assert [i.voice for i in first[0]] != [i.voice for i in other[0]]


# --- splits and shortcuts -----------------------------------------------------------------

def test_splits_are_identity_disjoint(rows):
    people = {s: set() for s in plan_lib.SPLITS}
    for r in rows.values():
        people[r["split"]] |= {r["identity"], r["source_identity"], r["audio_identity"]}
    assert not people["train"] & people["val"]
    assert not people["train"] & people["test"]
    assert not people["val"] & people["test"]


def test_demo_plan_splits_identities_and_test_stills():
    demo = {k: v for k, v in gen.PRESETS["demo"].items() if k != "size"}
    identities, specs = gen.plan(**demo, seed=3)
    split_of = {i.id: i.split for i in identities}
    for s in specs:
        involved = {s.identity.id, s.face_identity.id, s.audio_identity.id}
        assert {split_of[i] for i in involved} == {s.split}
    stills = {sp: {i.still for i in identities if i.split == sp} for sp in plan_lib.SPLITS}
    assert len(stills["test"]) == plan_lib.TEST_STILLS
    assert not stills["test"] & (stills["train"] | stills["val"])
    counts = {m: sum(s.method == m for s in specs) for m in METHODS}
    assert counts["real"] == 300
    assert max(counts[m] for m in FAKE_METHODS) - min(counts[m] for m in FAKE_METHODS) <= 1
    for s in specs:                         # the generator never plans digital silence cues
        assert plan_lib.LEAD_RANGE[0] <= s.take.lead <= plan_lib.LEAD_RANGE[1]
        if s.method == "desync":
            assert 80 <= abs(s.desync_ms) <= 400
            lead = s.take.lead + s.desync_ms / 1000
            assert plan_lib.LEAD_RANGE[0] - 1e-9 <= lead <= plan_lib.LEAD_RANGE[1] + 1e-9


def test_leading_silence_is_not_a_label_cue(clip, rows):
    """Measured speech onset of every clip, real or fake, lies in the same range."""
    lo, hi = plan_lib.LEAD_RANGE
    for cid in rows:
        _, audio, _ = clip(cid)
        e = log_energy(audio, hop=160)                     # 10 ms
        onset = np.argmax(e > e.min() + 0.5 * (e.max() - e.min())) * 0.01
        assert lo - 0.02 <= onset <= hi + 0.15, (cid, onset)


# --- speech and mouth tracks --------------------------------------------------------------

def test_phone_track_marks_the_speech_that_is_heard(clip, rows):
    for cid, r in rows.items():
        if r["method"] != "real":
            continue
        _, audio, t = clip(cid)
        e = log_energy(audio)
        silent, speech = e[t["phone"] == 0], e[t["phone"] > 0]
        assert len(silent) >= 2 and len(speech) >= 20
        # speech frames are well above (> 12 dB) the frames labelled silence (the noise
        # floor is drawn 35-50 dB below the speech peaks; weak consonants sit lower)
        assert np.median(speech) - np.median(silent) > np.log(10 ** (12 / 20))


def test_pixel_mouth_opening_follows_the_ground_truth(clip, rows):
    for cid, r in rows.items():
        frames, _, t = clip(cid)
        # a swapped face is pasted at lower resolution (and the astronaut donor shows
        # her teeth): its opening is greyer, so the darkness measure is weaker there
        floor = 0.6 if METHODS[r["method"]].video_op == "faceswap" else 0.8
        assert corr(mouth_darkness(frames, t), t["mouth_open"]) > floor, cid


def test_real_clips_are_in_sync(clip, rows):
    """Summed over the real clips, mouth opening correlates best with the audio cues at
    lag 0 (+-1 frame). Per clip the peak of such crude cues is not reliable (a phrase
    whose last words barely open the mouth skews it), hence the sum."""
    total = 0
    for cid, r in rows.items():
        if r["method"] == "real":
            frames, audio, t = clip(cid)
            mouth = mouth_darkness(frames, t)
            total = total + lag_curve(mouth, log_energy(audio), 10) + lag_curve(
                mouth, jaw_cue(audio, T), 10)
    assert abs(int(np.argmax(total)) - 10) <= 1


# --- each manipulation changes what it claims ----------------------------------------------

def test_desync_moves_the_sync_peak_by_the_stated_lag(bench, clip, rows):
    """The peak of the cross-correlation between mouth opening (pixels) and audio energy
    moves, from the source recording to the desync clip, by the stated lag."""
    r = by_method(rows, "desync")
    src = rows[r["source_clip_id"]]
    frames, audio, t = clip(r["clip_id"])
    src_frames, src_audio, _ = clip(src["clip_id"])
    stated = int(r["desync_ms"]) / 1000 * contract.VIDEO_FPS
    assert abs(stated) >= 2
    moved = (best_lag(mouth_darkness(frames, t), log_energy(audio), 12)
             - best_lag(mouth_darkness(src_frames, t), log_energy(src_audio), 12))
    assert abs(moved - stated) <= 1, (moved, stated)
    # the video stream itself is untouched
    assert packets(bench / r["path"], "video") == packets(bench / src["path"], "video")


def test_voiceconvert_keeps_phone_timing_and_changes_the_voice(clip, rows):
    r = by_method(rows, "voiceconvert")
    _, audio, t = clip(r["clip_id"])
    _, src_audio, src_t = clip(r["source_clip_id"])
    np.testing.assert_array_equal(t["phone"], src_t["phone"])
    # timing, measured: 10 ms energy envelopes match, best alignment at zero lag
    e, e_src = log_energy(audio, 160), log_energy(src_audio, 160)
    assert corr(e, e_src) > 0.8
    assert abs(best_lag(e_src, e, 10)) <= 1
    # voice, measured: the spectral envelope (MFCC 1-12 over speech frames) moved far
    # more than the codec alone moves it (same audio in two clips: faceswap vs its source)
    loud = e_src > np.percentile(e_src, 50)

    def mfcc(x):
        return librosa.feature.mfcc(y=x, sr=contract.AUDIO_SR, n_mfcc=13, n_fft=512,
                                    hop_length=160)[1:, :len(loud)]
    distance = np.abs(mfcc(audio) - mfcc(src_audio))[:, loud].mean()
    assert distance > 8.0, distance


def test_faceswap_keeps_the_audio_bytes_and_changes_the_face(bench, clip, rows):
    r = by_method(rows, "faceswap")
    src = rows[r["source_clip_id"]]
    assert r["source_identity"] != r["identity"]
    assert packets(bench / r["path"], "audio") == packets(bench / src["path"], "audio")
    frames, _, t = clip(r["clip_id"])
    src_frames, _, _ = clip(src["clip_id"])
    x, y, w, h = (int(v) for v in t["face_box"][0])
    diff = np.abs(frames.astype(np.int16) - src_frames).mean(axis=(0, 3))        # [H, W]
    inner = diff[y + h // 4:y + 3 * h // 4, x + w // 4:x + 3 * w // 4].mean()
    outside = np.concatenate([diff[:, :max(x - 10, 1)].ravel(), diff[:, x + w + 10:].ravel()])
    assert inner > 12 and np.median(outside) < 2, (inner, np.median(outside))


def test_lipsync_mouth_follows_the_new_utterance(clip, rows):
    r = by_method(rows, "lipsync")
    frames, audio, t = clip(r["clip_id"])
    src_frames, src_audio, _ = clip(r["source_clip_id"])
    assert r["transcript"] != rows[r["source_clip_id"]]["transcript"]
    mouth = mouth_darkness(frames, t)
    assert corr(mouth, jaw_cue(audio, T)) > max(0.3, corr(mouth, jaw_cue(src_audio, T)) + 0.05)
    # only the lower face was replaced: compared after a blur (sigma 2 px) that removes
    # the codec noise a changed frame spreads everywhere, the eyes are unchanged
    x, y, w, h = (int(v) for v in t["face_box"][0])

    def blur(fr):
        return np.stack([cv2.GaussianBlur(f, (0, 0), 2) for f in fr]).astype(np.int16)
    diff = np.abs(blur(frames) - blur(src_frames)).mean(axis=(0, 3))              # [H, W]
    eyes = diff[y + h // 5:y + h // 2, x:x + w].mean()
    mouth_area = diff[int(t["mouth_center"][0, 1]) - 5:y + h, x + w // 4:x + 3 * w // 4].mean()
    assert mouth_area > 4 * eyes and eyes < 1.5, (eyes, mouth_area)


def test_talkinghead_mouth_follows_energy_with_one_shape(clip, rows):
    r = by_method(rows, "talkinghead")
    frames, audio, t = clip(r["clip_id"])
    assert corr(mouth_darkness(frames, t), log_energy(audio)) > 0.7
    assert np.ptp(t["mouth_width"]) == 0 and np.ptp(t["mouth_round"]) == 0
    assert (t["video_phone"] == -1).all()
    # its source recording's lips do change shape with the phones
    _, _, src_t = clip(r["source_clip_id"])
    assert np.ptp(src_t["mouth_width"]) > 0.2 and np.ptp(src_t["mouth_round"]) > 0.2
    # the head moves less and slower than in the source recording: path length of the
    # face centre (ground-truth boxes, checked against the detector in
    # test_face_detector_finds_the_faces; Haar's own +-1-2 px jitter would swamp it)
    def path_length(truth):
        centre = truth["face_box"][:, :2] + truth["face_box"][:, 2:] / 2
        return np.abs(np.diff(centre, axis=0)).sum()
    assert path_length(t) < 0.6 * path_length(src_t)


def test_voiceclone_keeps_the_video_and_breaks_lip_content(bench, clip, rows):
    r = by_method(rows, "voiceclone")
    src = rows[r["source_clip_id"]]
    assert packets(bench / r["path"], "video") == packets(bench / src["path"], "video")
    assert r["audio_identity"] != r["identity"] and r["transcript"] != src["transcript"]
    frames, audio, t = clip(r["clip_id"])
    _, src_audio, _ = clip(src["clip_id"])
    mouth = mouth_darkness(frames, t)
    assert corr(mouth, jaw_cue(src_audio, T)) > corr(mouth, jaw_cue(audio, T)) + 0.05


def _iou(a, b) -> float:
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def test_face_detector_finds_the_faces(clip, rows):
    """The project's Haar detector finds the face in the decoded frames, where the
    ground-truth face box says it is."""
    for cid, r in rows.items():
        frames, _, t = clip(cid)
        found = [(detect_largest_face(cv2.cvtColor(frames[k], cv2.COLOR_RGB2GRAY)),
                  t["face_box"][k]) for k in range(0, T, 5)]
        rate = np.mean([b is not None for b, _ in found])
        assert rate >= (0.95 if r["method"] == "real" else 0.9), (cid, r["method"], rate)
        assert np.median([_iou(b, truth) for b, truth in found if b is not None]) > 0.7, cid


# --- face stills ----------------------------------------------------------------------------

def _realtalk_manifest() -> dict[str, dict[str, str]]:
    path = REALTALK / "manifest.csv"
    if not path.is_file():
        pytest.fail(f"realtalk corpus missing: {path} (expected beside the repository)")
    with open(path, newline="") as f:
        return {r["file"]: r for r in csv.DictReader(f)}


def test_stills_come_from_realtalk_train_identities_not_the_fixtures():
    """Every still but the astronaut is a real realtalk clip of its identity, and that
    identity is in the train split by the realtalk builder's own rule (its fractions and
    salt); no still file is a fixture clip."""
    from datasets.realtalk.realtalk import Realtalk
    assert (faces.REALTALK_FRACTIONS, faces.REALTALK_SALT) == (Realtalk.FRACTIONS, Realtalk.SALT)
    manifest = _realtalk_manifest()
    fixture_files = {p.name for p in FIXTURES.iterdir()}
    sources = [s for s in faces.STILL_SOURCES if s.file]
    assert 7 <= len({s.name for s in sources}) == len(sources) <= 10
    assert {s.gender for s in sources} == {"m", "f"}
    stills = faces.load_stills()
    assert [s.name for s in stills] == [s.name for s in faces.STILL_SOURCES]
    for src, still in zip(faces.STILL_SOURCES, stills):
        if src.file is None:
            assert still.source == "skimage.data.astronaut()"
            continue
        row = manifest[src.file]
        assert row["label"] == "real" and row["identity"] == src.name
        assert splits.split_of(src.name, Realtalk.FRACTIONS, Realtalk.SALT) == "train"
        assert src.file not in fixture_files and "retalking" not in src.file
        assert still.source.startswith(f"{src.file} frame ")
        # face-mesh geometry: eyes above the mouth, the mouth between the eyes
        (lx, ly), (rx, ry) = still.geometry.eyes
        mx, my = still.geometry.mouth
        assert lx < mx < rx and my > max(ly, ry) + 0.2 * still.geometry.size


def test_a_still_from_another_split_or_a_fake_is_refused():
    manifest = _realtalk_manifest()
    held_out = next(r for r in manifest.values()
                    if r["label"] == "real" and splits.split_of(r["identity"]) == "test")
    with pytest.raises(ConfigError, match="test split"):
        faces.check_source(faces.StillSource(held_out["identity"], held_out["file"], "m"),
                           manifest, REALTALK / "manifest.csv")
    fake = next(r for r in manifest.values()
                if r["label"] == "fake" and splits.split_of(r["identity"]) == "train")
    with pytest.raises(ConfigError, match="must be a real clip"):
        faces.check_source(faces.StillSource(fake["identity"], fake["file"], "m"),
                           manifest, REALTALK / "manifest.csv")


def test_missing_realtalk_folder_or_manifest_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv(faces.REALTALK_ENV, str(tmp_path / "nowhere"))
    assert faces.realtalk_dir() == tmp_path / "nowhere"
    faces.load_stills.cache_clear()
    with pytest.raises(FileMissingError, match="nowhere.*realtalk folder not found"):
        faces.load_stills()
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileMissingError, match="manifest.csv"):
        faces.load_stills(str(tmp_path / "empty"))
    faces.load_stills.cache_clear()


def test_picked_frame_is_the_most_closed_frontal_frame_every_time():
    """pick_frame on a GRID clip: the same frame twice, the decoder's frame at that
    index, and the frame of smallest mouth opening among the checked ones (a plain loop
    over the landmark measures), in the clip's most closed tenth."""
    path = REALTALK / "real_rizkiarm-LipNet_6.mp4"
    k, frame = still_frames.pick_frame(path)
    k2, frame2 = still_frames.pick_frame(path)
    assert k == k2 and frame.tobytes() == frame2.tobytes()
    np.testing.assert_array_equal(frame, list(iter_frames(path))[k])
    m = still_frames.measure_clip(path)
    c = still_frames.FrameChecks()
    found = [i for i in range(len(m.index)) if m.presence[i] >= c.min_presence]
    eye_median = np.median([m.eye[i] for i in found])
    ok = [i for i in found if abs(m.yaw[i]) <= c.max_abs_yaw
          and abs(m.roll_deg[i]) <= c.max_abs_roll_deg and m.eye[i] >= c.min_eye_ratio * eye_median]
    best = min(ok, key=lambda i: (round(m.opening[i] / still_frames.OPENING_STEP), m.index[i]))
    assert k == m.index[best]
    assert m.opening[best] <= np.percentile(m.opening[found], 10)


def test_landmark_measures_of_a_hand_made_face():
    """Mouth opening, yaw, roll and eye opening of hand-placed mesh points, then of the
    same points rotated by 8 degrees (roll follows, the ratios do not change)."""
    pts = np.zeros((1, 468, 2))
    pts[0, [61, 291]] = [(-20, 40), (20, 40)]            # mouth 40 wide
    pts[0, [13, 14]] = [(0, 37), (0, 43)]                # inner lips 6 apart
    pts[0, [33, 133, 362, 263]] = [(-40, 0), (-15, 0), (15, 0), (40, 0)]   # eyes 25 wide
    pts[0, [159, 145, 386, 374]] = [(-28, -4), (-28, 4), (28, -3), (28, 3)]
    pts[0, 1] = (8, 20)                                  # nose tip a little to the right
    m = still_frames.measures_of(pts)
    np.testing.assert_allclose(m["opening"], [6 / 40])
    np.testing.assert_allclose(m["yaw"], [48 / 80 - 0.5])
    np.testing.assert_allclose(m["roll_deg"], [0.0], atol=1e-12)
    np.testing.assert_allclose(m["eye"], [0.5 * (8 / 25 + 6 / 25)])
    a = np.radians(8.0)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    turned = still_frames.measures_of(pts @ rot.T)
    np.testing.assert_allclose(turned["roll_deg"], [8.0])
    np.testing.assert_allclose(turned["opening"], m["opening"])
    np.testing.assert_allclose(turned["eye"], m["eye"])


# --- units ----------------------------------------------------------------------------------

def test_tts_is_deterministic_and_segments_tile_the_audio():
    voice = tts.Voice("en-us+f3", pitch=55, rate=170)
    a = tts.synthesize("Mary moved the purple boat, Bob watched", voice)
    b = tts.synthesize("Mary moved the purple boat, Bob watched", voice)
    np.testing.assert_array_equal(a.audio, b.audio)
    assert a.phones == b.phones and np.array_equal(a.starts, b.starts)
    assert a.starts[0] == 0 and a.ends[-1] == len(a.audio)
    np.testing.assert_array_equal(a.starts[1:], a.ends[:-1])
    # the espeak mnemonics map into the shared alphabet consistently
    for mnemonic, phone in zip(a.mnemonics, a.phones):
        assert alphabet.phone_to_viseme(mnemonic, "espeak") == alphabet.ARPABET_TO_VISEME[phone]
    with pytest.raises(tts.TTSError, match="no voice"):
        tts.synthesize("hello", tts.Voice("xx-no-such-voice"))


def test_coarticulation_closes_lips_for_bilabials_and_opens_for_vowels():
    sr = contract.AUDIO_SR
    phones = ("SIL", "AA", "M", "AA", "UW", "SIL")
    bounds = np.array([0, 0.2, 0.5, 0.7, 1.0, 1.3, 1.6]) * sr
    u = tts.Utterance(text="", voice=tts.Voice("en-us"), audio=np.zeros(int(bounds[-1]),
                      np.float32), phones=phones, starts=bounds[:-1].astype(np.int64),
                      ends=bounds[1:].astype(np.int64), mnemonics=phones)
    art = visemes.articulation(visemes.Placed(u, 0), 40)
    at = lambda s: int(s * contract.VIDEO_FPS)           # noqa: E731 - frame of a time
    assert art.open[at(0.35)] > 0.8                       # middle of /a:/
    assert art.open[at(0.6)] < 0.15                       # /m/ closes the lips
    assert art.round[at(1.15)] > 0.8 and art.width[at(1.15)] < 0.35     # /u:/ rounds
    assert art.open[at(0.05)] < 0.1
    track = visemes.phone_track(visemes.Placed(u, 0), 40)
    assert tts.PHONES[track[at(0.6)]] == "M" and tts.PHONES[track[at(1.1)]] == "UW"


def test_bad_arguments_are_clear_errors(tmp_path, capsys):
    assert gen.main(["--out", str(tmp_path / "x"), "--num_clips", "6"]) == 2
    assert "identities" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="even"):
        gen.generate(tmp_path / "y", num_clips=20, size=161)
    with pytest.raises(ConfigError, match="unknown methods"):
        gen.plan(num_clips=20, method_weights={"deepfake9000": 1.0})
    faces.load_stills.cache_clear()
    with pytest.raises(FileMissingError, match="nowhere"):
        faces.load_stills(str(tmp_path / "nowhere"))


def test_summary_table_counts_clips(rows):
    table = gen.summary(list(rows.values()))
    assert "faceswap+voiceclone" in table
    last = table.splitlines()[-1].split()
    assert last[0] == "total" and int(last[-1]) == len(rows)
