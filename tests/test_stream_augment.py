"""Training-time lip-point / waveform augmentation (avdetect/data/stream_augment.py):
each transform against a NumPy formula (the mirror against the mesh's own left / right
pairs, distances under rotation, the shelf against its recursion, the SNR of the noise),
determinism, the order after on-the-fly pseudo-fakes, and an untouched eval path."""

from __future__ import annotations

import numpy as np
import pytest

from avdetect import contract
from avdetect.data import pipeline as pl
from avdetect.data import stream_augment as sa
from avdetect.data.metadata import SplitIndex
from avdetect.errors import ConfigError
from avdetect.preprocess.landmarks import LIP_POINTS
from test_pseudo_fakes_otf import make_av_example

SPF = contract.SAMPLES_PER_FRAME
T = 6

# MediaPipe face-mesh indices of the mouth that mirror each other (subject's left <->
# right), read off the canonical mesh; the midline points map to themselves.
MESH_PAIRS = [(61, 291), (40, 270), (37, 267), (0, 0), (321, 91), (314, 84), (17, 17),
              (78, 308), (81, 311), (13, 13), (402, 178), (14, 14)]


def _mouth(n: int, rng) -> np.ndarray:
    return (0.5 + 0.1 * rng.normal(size=(n, contract.NUM_LIPS, 2))).astype(np.float32)


def _pairwise(x):
    return np.linalg.norm(x[..., :, None, :] - x[..., None, :, :], axis=-1)


# ------------------------------------------------------------------------------ lips

def test_mirror_equals_the_hand_permuted_mirror():
    partner = {}
    for a, b in MESH_PAIRS:
        partner[a], partner[b] = b, a
    perm = [LIP_POINTS.index(partner[p]) for p in LIP_POINTS]
    lips = _mouth(4, np.random.default_rng(0))
    expected = np.stack([1.0 - lips[:, perm, 0], lips[:, perm, 1]], axis=-1)
    np.testing.assert_allclose(sa.mirror_lips(lips), expected, atol=0)
    np.testing.assert_allclose(sa.mirror_lips(sa.mirror_lips(lips)), lips, atol=1e-7)
    # a mouth symmetric about x = 0.5 is its own mirror image
    sym = lips.copy()
    for i, p in enumerate(LIP_POINTS):
        j = LIP_POINTS.index(partner[p])
        sym[:, j, 0] = 1.0 - sym[:, i, 0] if i != j else 0.5
        sym[:, j, 1] = sym[:, i, 1]
    np.testing.assert_allclose(sa.mirror_lips(sym), sym, atol=1e-6)


def test_rotation_preserves_distances_and_turns_by_the_angle():
    lips = _mouth(5, np.random.default_rng(1)).astype(np.float64)
    angle = np.deg2rad(12.0)
    out = sa.similarity(lips, 5, angle, 1.0, 1.0, np.zeros(2))
    np.testing.assert_allclose(_pairwise(out), _pairwise(lips), atol=1e-12)
    v0, v1 = lips[2, 6] - lips[2, 0], out[2, 6] - out[2, 0]
    turned = np.arctan2(v1[1], v1[0]) - np.arctan2(v0[1], v0[0])
    assert np.isclose(np.angle(np.exp(1j * turned)), angle, atol=1e-9)
    # the centre (mean over the valid frames) stays put, and a translation moves it by t
    np.testing.assert_allclose(out.reshape(-1, 2).mean(0), lips.reshape(-1, 2).mean(0),
                               atol=1e-12)
    t = np.array([0.01, -0.02])
    moved = sa.similarity(lips, 5, 0.0, 1.0, 1.0, t)
    np.testing.assert_allclose(moved - lips, np.broadcast_to(t, lips.shape), atol=1e-12)


def test_anisotropic_scale_scales_width_and_height_separately():
    lips = _mouth(3, np.random.default_rng(2)).astype(np.float64)
    out = sa.similarity(lips, 3, 0.0, 1.15, 0.9, np.zeros(2))
    c = lips.reshape(-1, 2).mean(0)
    np.testing.assert_allclose(out - c, (lips - c) * np.array([1.15, 0.9]), atol=1e-12)


def test_lips_window_draw_keeps_padding_noise_at_sigma_and_is_seeded():
    lips = np.zeros((10, contract.NUM_LIPS, 2), np.float32)
    lips[:7] = _mouth(7, np.random.default_rng(3))
    spec = sa.LipsAugSpec(rotate_deg=10, scale=0.15, shift=0.02, mirror=0.5, noise=0.004)
    a = sa.augment_lips(lips, 7, spec, np.random.default_rng(5))
    b = sa.augment_lips(lips, 7, spec, np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.float32 and not a[7:].any()
    assert not np.allclose(a[:7], lips[:7])
    # noise only: the residual's std is sigma (14,000 draws: within 3 %)
    big = np.tile(lips[:7], (100, 1, 1))
    only_noise = sa.LipsAugSpec(rotate_deg=0, scale=0, shift=0, mirror=0, noise=0.004)
    resid = sa.augment_lips(big, 700, only_noise, np.random.default_rng(6)) - big
    assert abs(resid.std() / 0.004 - 1) < 0.03 and abs(resid.mean()) < 2e-4
    # rigid draws (no scale, no noise) keep every within-frame distance
    rigid = sa.LipsAugSpec(rotate_deg=10, scale=0, shift=0.02, mirror=0.5, noise=0)
    r = sa.augment_lips(lips, 7, rigid, np.random.default_rng(7))
    np.testing.assert_allclose(_pairwise(r[:7]), _pairwise(lips[:7]), atol=1e-5)
    with pytest.raises(ValueError, match=r"\[T, 20, 2\]"):
        sa.augment_lips(lips[:, :10], 7, spec, np.random.default_rng(0))


# ------------------------------------------------------------------------------ audio

def test_shelf_matches_its_recursion_and_its_gain_in_band():
    rng = np.random.default_rng(0)
    x = rng.normal(0, 0.1, 800)
    a = np.exp(-2 * np.pi * sa.SHELF_CUTOFF_HZ / contract.AUDIO_SR)
    low, prev = np.zeros_like(x), 0.0
    for i, v in enumerate(x):                   # y[t] = (1 - a) x[t] + a y[t-1]
        prev = (1 - a) * v + a * prev
        low[i] = prev
    g = 10 ** (4.0 / 20)
    np.testing.assert_allclose(sa.shelf_filter(x, 4.0, high=False), x + (g - 1) * low,
                               atol=1e-12)
    np.testing.assert_allclose(sa.shelf_filter(x, 4.0, high=True), x + (g - 1) * (x - low),
                               atol=1e-12)
    # a tone's steady-state gain is |1 + (g - 1) H| (H: the band's transfer function at
    # its frequency); deep in the low band both the shelf and that formula give ~g
    t = np.arange(contract.AUDIO_SR) / contract.AUDIO_SR
    for f, high in ((50.0, False), (3000.0, False), (500.0, True), (7000.0, True)):
        z1 = np.exp(-2j * np.pi * f / contract.AUDIO_SR)          # z^-1 on the unit circle
        h_low = (1 - a) / (1 - a * z1)
        expect = abs(1 + (g - 1) * ((1 - h_low) if high else h_low))
        tone = np.sin(2 * np.pi * f * t)
        y = sa.shelf_filter(tone, 4.0, high)[4000:]     # past the transient
        assert abs(np.sqrt(2 * np.mean(y ** 2)) / expect - 1) < 0.01, (f, high)
    y = sa.shelf_filter(np.sin(2 * np.pi * 30.0 * t), 4.0, False)[4000:]
    assert abs(np.sqrt(2 * np.mean(y ** 2)) / g - 1) < 0.01


def test_noise_meets_the_target_snr():
    t = np.arange(2 * contract.AUDIO_SR) / contract.AUDIO_SR
    wave = 0.3 * np.sin(2 * np.pi * 220 * t)
    for snr in (10.0, 20.0, 30.0):
        noisy = sa.add_noise(wave, snr, np.random.default_rng(int(snr)))
        measured = 10 * np.log10(np.mean(wave ** 2) / np.mean((noisy - wave) ** 2))
        assert abs(measured - snr) < 0.1
    np.testing.assert_array_equal(sa.add_noise(np.zeros(100), 10.0, np.random.default_rng(0)),
                                  np.zeros(100))


def test_audio_window_draw_gain_padding_and_seed():
    rng = np.random.default_rng(1)
    wave = np.zeros(10 * SPF, np.float32)
    wave[:7 * SPF] = rng.normal(0, 0.05, 7 * SPF)
    gain_only = sa.AudioAugSpec(gain_db=6, shelf_db=0, noise_prob=0)
    out = sa.augment_audio(wave, 7 * SPF, gain_only, np.random.default_rng(3))
    ratio = out[:7 * SPF] / wave[:7 * SPF]
    assert np.ptp(ratio) < 1e-5 and abs(20 * np.log10(ratio[0])) <= 6.0 + 1e-6
    assert not out[7 * SPF:].any() and out.dtype == np.float32
    spec = sa.AudioAugSpec()
    a = sa.augment_audio(wave, 7 * SPF, spec, np.random.default_rng(9))
    np.testing.assert_array_equal(a, sa.augment_audio(wave, 7 * SPF, spec,
                                                      np.random.default_rng(9)))
    assert np.abs(a).max() <= 1.0 and not a[7 * SPF:].any()


# ------------------------------------------------------------------------------ config

def test_config_parse_and_errors():
    assert not sa.parse({}, {"enable": False, "gain_db": 3.0}).active
    spec = sa.parse({"enable": True, "noise": 0.01}, {})
    assert spec.lips == sa.LipsAugSpec(noise=0.01) and spec.audio is None
    with pytest.raises(ConfigError, match="unknown field.*'rotate'"):
        sa.parse({"enable": True, "rotate": 5}, {})
    with pytest.raises(ConfigError, match="snr_db_min"):
        sa.parse({}, {"enable": True, "snr_db_min": 30, "snr_db_max": 10})
    with pytest.raises(ConfigError, match="raw 'audio' waveform only"):
        sa.check_streams(sa.parse({}, {"enable": True}), frozenset({"audio", "logmel"}))


# ------------------------------------------------------------------------------ windows

def _lips_example(video: int, n: int) -> dict:
    ex = make_av_example(video, n, "real")
    ex["lips"] = _mouth(n, np.random.default_rng(50 + video)).reshape(n, -1)
    ex["has_lips"] = True
    return dict(ex, _record=video)


def _cfg(**kw):
    base = dict(name="unused", data_dir="unused", window=T, batch_size=4, num_workers=0,
                read_threads=1, prefetch_batches=2, augment=False, inputs=("lips", "audio"))
    base.update(kw)
    return base


AUG = dict(lips_augment={"enable": True}, audio_augment={"enable": True})


def test_train_windows_are_augmented_after_the_pseudo_fake_and_eval_is_not():
    src = [_lips_example(v, n) for v, n in enumerate((30, 26, 31))]
    index = SplitIndex.from_examples(src)
    plain, aug = pl._maker(_cfg(), index), pl._maker(_cfg(**AUG), index)
    assert plain.stream_aug is None and aug.stream_aug.active
    ex = src[0]
    a = aug.random_window(ex, np.random.default_rng(4), augment=False)
    b = aug.random_window(ex, np.random.default_rng(4), augment=False)
    p = plain.random_window(ex, np.random.default_rng(4), augment=False)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert a["window_start"] == p["window_start"]          # drawn first, as without it
    assert not np.allclose(a["lips"], p["lips"]) and not np.allclose(a["audio"], p["audio"])
    # evaluation windows never see it
    for wa, wp in zip(aug.eval_windows(ex, True), plain.eval_windows(ex, True)):
        for k in wp:
            np.testing.assert_array_equal(wa[k], wp[k])
    # a shifted pseudo-fake gets the gain on top of its shifted audio: gain-only audio
    # augmentation leaves it proportional to the clip's samples at the lag
    shift = dict(pseudo_fakes={"shift": 1.0}, pf_shift_min=2, pf_shift_max=5,
                 audio_augment={"enable": True, "shelf_db": 0.0, "noise_prob": 0.0})
    m = pl._maker(_cfg(**shift), index)
    clean = contract.from_int16(np.asarray(ex["audio"]))
    for seed in range(10):
        w = m.random_window(ex, np.random.default_rng(seed), augment=False)
        assert int(w["audio_fake"]) == 1
        s = int(w["window_start"])
        n = int(w["frame_mask"].sum())
        fits = []
        for lag in range(-5, 6):
            a0 = s + lag
            if abs(lag) < 2 or a0 < 0 or a0 + n > 30:
                continue
            ref = clean[a0 * SPF:(a0 + n) * SPF]
            r = w["audio"][:n * SPF] / np.where(ref == 0, np.nan, ref)
            fits.append(np.nanmax(r) - np.nanmin(r) < 1e-3 and
                        abs(20 * np.log10(np.nanmedian(r))) <= 6.0 + 1e-3)
        assert sum(fits) == 1, seed
