"""Digital silence (``contract.digital_silence``) on hand-made clips against a
sample-level NumPy reference."""

from __future__ import annotations

import numpy as np
import pytest

from avdetect import contract

SPF = contract.SAMPLES_PER_FRAME


def _reference(x_int16: np.ndarray) -> tuple[int, int]:
    """Independent: the first / last sample louder than 2 int16 steps, in whole frames."""
    t = len(x_int16) // SPF
    loud = np.flatnonzero(np.abs(x_int16[:t * SPF].astype(np.int64)) > 2)
    if len(loud) == 0:
        return t, t
    return int(loud[0] // SPF), int(t - 1 - loud[-1] // SPF)


def _clip(lead: int, body: int, trail: int, seed: int = 0) -> np.ndarray:
    """int16 clip: ``lead`` frames of zeros, a tone, ``trail`` frames of zeros."""
    n = body * SPF
    tone = 0.3 * np.sin(2 * np.pi * 220 * np.arange(n) / contract.AUDIO_SR)
    tone += 0.01 * np.random.default_rng(seed).normal(size=n)
    wave = np.concatenate([np.zeros(lead * SPF), tone, np.zeros(trail * SPF)])
    return np.round(wave * 32767).astype(np.int16)


@pytest.mark.parametrize("lead,body,trail", [(0, 10, 0), (7, 20, 3), (12, 1, 0), (0, 5, 9)])
def test_zero_padded_clip(lead, body, trail):
    x = _clip(lead, body, trail)
    assert contract.digital_silence(x) == (lead, trail) == _reference(x)
    # the float waveform of the same clip gives the same frames
    assert contract.digital_silence(x.astype(np.float32) / 32768.0) == (lead, trail)


def test_threshold_partial_frames_and_whole_silence():
    x = _clip(6, 10, 4)
    # a near-silent frame (|x| <= 2 steps, as a lossy decoder leaves) still counts as
    # silence; a single sample of 3 steps makes its whole frame sounding
    x[2 * SPF:3 * SPF] = np.random.default_rng(1).integers(-2, 3, SPF)
    assert contract.digital_silence(x) == (6, 4) == _reference(x)
    x[2 * SPF + 100] = 3
    assert contract.digital_silence(x) == (2, 4) == _reference(x)
    # a trailing partial frame is ignored; an all-silent clip is silent at both ends
    assert contract.digital_silence(np.r_[_clip(1, 3, 0), np.full(100, 9000, np.int16)]) == (1, 0)
    assert contract.digital_silence(np.zeros(5 * SPF, np.int16)) == (5, 5)
    assert contract.digital_silence(np.zeros(0, np.float32)) == (0, 0)
    with pytest.raises(ValueError, match="mono"):
        contract.digital_silence(np.zeros((2, SPF)))


# ----------------------------------------------------------------------------------
# The trimmed evaluation view on a built dataset whose fakes begin with silence
# ----------------------------------------------------------------------------------

WINDOW = 10
# FakeAVCeleb layout (tests/test_builders.py): one real and one audio-fake clip per
# identity; the fakes' tone starts LEAD_S late, as FakeAVCeleb's re-voiced clips do.
LEAD_S = 0.48
IDS = [("id00076", "00109"), ("id00166", "00010"), ("id07200", "00045"),
       ("id03525", "00048")]


@pytest.fixture(scope="module")
def silent_fakes(tmp_path_factory):
    import media_factory as mf
    from test_builders import FAV_HEADER, standin_preprocess

    from avdetect.data import build

    root = tmp_path_factory.mktemp("silence") / "FakeAVCeleb_v1.2"
    lines = [FAV_HEADER]
    for i, (ident, clip) in enumerate(IDS):
        for kind, method, letter, name, start in (
                ("RealVideo-RealAudio", "real", "A", f"{clip}.mp4", 0.0),
                ("RealVideo-FakeAudio", "rtvc", "B", f"{clip}_id09999_fake.mp4", LEAD_S)):
            folder = f"{kind}/African/men/{ident}"
            path = root / folder / name
            path.parent.mkdir(parents=True, exist_ok=True)
            mf.make_video(path, seconds=1.2, size=(64, 48), tone_hz=300 + 40 * i,
                          tone_start_s=start, seed=i)
            lines.append(f"{ident},{'-' if method == 'real' else 'id09999'},-,{method},{letter},"
                         f"{kind},African,men,{name},FakeAVCeleb/{folder}\n")
    (root / "meta_data.csv").write_text("".join(lines))
    data_dir = tmp_path_factory.mktemp("silence_data")
    build.build("fakeavceleb/face112", data_dir=str(data_dir), manual_dir=str(root.parent),
                workers=0, preprocess_fn=standin_preprocess)
    return str(data_dir)


def _silence_scorer(batch) -> np.ndarray:
    """A shortcut 'detector': the share of a window's valid frames that are digitally silent
    (a NumPy formula on the window's waveform, independent of contract.digital_silence)."""
    frames = batch["audio"].reshape(len(batch["audio"]), WINDOW, SPF)
    silent = np.abs(frames).max(-1) <= 2.0 / 32768.0
    mask = batch["frame_mask"]
    return (silent * mask).sum(1) / np.maximum(mask.sum(1), 1)


def test_trimmed_view_removes_a_silence_shortcut(silent_fakes):
    from avdetect import evaluation
    from avdetect.data import pipeline as pl

    cfg = dict(name="fakeavceleb/face112", data_dir=silent_fakes, window=WINDOW, batch_size=4,
               inputs=("mouth", "audio"), read_threads=1)
    source, index, _ = pl.open_split(cfg, "train+test")
    col = evaluation.Collector()
    windows = []
    for b in pl.eval_batches_from_source(source, index, cfg, trim_silence=True):
        col.add({"score": _silence_scorer(b), "n_frames": b["frame_mask"].sum(1),
                 **{k: b[k] for k in ("label", "video_id", "valid", "method", "view",
                                      "trim_lead", "trim_trail", "all_silent")}})
        windows += [{k: b[k][i] for k in ("video_id", "window_start", "view", "frame_mask",
                                          "trim_lead", "trim_trail")}
                    for i in np.flatnonzero(b["valid"])]
    # The spans: each fake's waveform starts with about LEAD_S of digital silence (a lossy
    # codec may eat a frame of it), the reals' at most the codec's priming.
    for r in range(len(source)):
        ex = source[r]
        audio = np.asarray(ex["audio"])
        lead, trail = _reference(audio)
        mine = [w for w in windows if w["video_id"] == r]
        assert {(int(w["trim_lead"]), int(w["trim_trail"])) for w in mine} == {(lead, trail)}
        if ex["label"]:
            assert abs(lead - LEAD_S * contract.VIDEO_FPS) <= 2
        else:
            assert lead <= 2
        nf = int(ex["num_frames"])
        # as-is windows tile every frame; trimmed ones tile exactly [lead, nf - trail)
        for bit, lo, hi in ((contract.VIEW_AS_IS, 0, nf),
                            (contract.VIEW_TRIMMED, lead, nf - trail)):
            covered = sorted(int(w["window_start"]) + f for w in mine if w["view"] & bit
                             for f in np.flatnonzero(w["frame_mask"]))
            assert covered == list(range(lo, hi)), (r, bit)
    rep = evaluation.evaluate_records(col.records(), threshold=0.5, threshold_source="test",
                                      method_names=index.method_names)
    videos = evaluation.aggregate_videos(evaluation.view_records(col.records()))
    assert (videos["label"] == 1).sum() == 4 and (videos["label"] == 0).sum() == 4
    # As-is, the silence shortcut separates the fakes perfectly; trimmed, it sees nothing.
    assert rep["video"]["overall"]["auc"] == 1.0
    assert rep["trimmed"]["video"]["overall"]["auc"] == 0.5
    assert rep["video"]["per_method"]["rtvc"]["auc"] == 1.0
    assert rep["trimmed"]["video"]["per_method"]["rtvc"]["auc"] == 0.5
    assert rep["silence"]["fake"]["with_silence"] == 4 and rep["silence"]["all_silent"] == []
    assert rep["silence"]["fake"]["mean_lead_frames"] >= 10
    md = evaluation.report_markdown(rep)
    assert "| subset | #real | #fake | AUC | AUC (trimmed) | AP | AP (trimmed) |" in md
    assert "| manipulation: rtvc | 4 | 4 | 1.0000 | 0.5000 |" in md
    assert "fake 4/4 (mean lead " in md and "silent throughout (kept whole): 0" in md
    flat = evaluation.flat_scalars(rep, "eval/test")
    assert flat["eval/test/video_auc"] == 1.0 and flat["eval/test/video_auc_trimmed"] == 0.5


def test_all_silent_clip_keeps_its_full_span():
    from avdetect.data.windows import WindowMaker
    from test_pipeline_grain import make_example

    ex = dict(make_example(0, 13), _record=0)
    ex["audio"] = np.zeros(13 * SPF, np.int16)
    maker = WindowMaker(window=6, method_ids={"real": 0})
    ws = maker.eval_windows(ex, trim_silence=True)
    assert [int(w["window_start"]) for w in ws] == [0, 6, 12]
    assert all(w["view"] == contract.VIEW_AS_IS | contract.VIEW_TRIMMED and w["all_silent"]
               for w in ws)
    ex["audio"] = _clip(0, 13, 0)
    ws = maker.eval_windows(ex, trim_silence=True)
    assert len(ws) == 3 and all(w["view"] == 3 and not w["all_silent"] for w in ws)
    assert len(maker.eval_windows(ex, trim_silence=False)) == 3
    del ex["audio"]
    with pytest.raises(ValueError, match="trim_silence=False"):
        maker.eval_windows(ex, trim_silence=True)


def test_trimmed_windows_split_over_hosts_cover_every_view_once():
    from avdetect.data import pipeline as pl
    from avdetect.data.metadata import SplitIndex
    from test_pipeline_grain import make_example

    spans = [(0, 14, 0), (5, 9, 2), (0, 0, 11), (3, 20, 0), (0, 7, 6), (2, 2, 2)]
    source = []
    for v, (lead, body, trail) in enumerate(spans):
        ex = make_example(v, lead + body + trail)
        ex["audio"] = _clip(lead, body, trail, seed=v)
        source.append(ex)
    index = SplitIndex.from_examples(source)
    cfg = dict(name="unused", data_dir="unused", window=4, batch_size=4, read_threads=1,
               inputs=("mouth",))

    def keys(p, P):
        return sorted((int(b["video_id"][i]), int(b["window_start"][i]), int(b["view"][i]),
                       int(b["frame_mask"][i].sum()))
                      for b in pl.eval_batches_from_source(source, index, cfg, process_index=p,
                                                           process_count=P,
                                                           local_batch_size=4,
                                                           trim_silence=True)
                      for i in np.flatnonzero(b["valid"]))

    one = keys(0, 1)
    assert sorted(keys(0, 2) + keys(1, 2)) == one
    want = []
    for v, (lead, body, trail) in enumerate(spans):
        nf = lead + body + trail
        both = body == 0 or lead + trail == 0           # silent throughout / nothing to trim
        view = 3 if both else 1
        want += [(v, s, view, min(4, nf - s)) for s in range(0, nf, 4)]
        if not both:
            want += [(v, s, 2, min(4, nf - trail - s)) for s in range(lead, nf - trail, 4)]
    assert one == sorted(want)


def test_silence_check_command_on_a_labelled_folder(tmp_path, capsys):
    import media_factory as mf
    from avdetect.data import silence_check

    rows = ["file,label,method"]
    for i, (label, start) in enumerate((("real", 0.0), ("real", 0.0), ("fake", 0.4),
                                        ("fake", 0.6))):
        name = f"sub/clip{i}.mp4"
        (tmp_path / "sub").mkdir(exist_ok=True)
        mf.make_video(tmp_path / name, seconds=1.2, size=(48, 32), tone_hz=300 + 50 * i,
                      tone_start_s=start, seed=i)
        rows.append(f"{name},{label},{'real' if label == 'real' else 'late_voice'}")
        lead, trail, t = silence_check.clip_silence(tmp_path / name)
        assert t == 30 and trail <= 1
        assert abs(lead - start * contract.VIDEO_FPS) <= 1       # a lossy codec: +-1 frame
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    assert silence_check.main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "4 clips under" in out
    assert any(line.startswith("| class: fake | 2 | 2 |") and line.endswith("| 1.000 |")
               for line in out.splitlines())
    assert any(line.startswith("| manipulation: late_voice | 2 | 2 |")
               for line in out.splitlines())
    (tmp_path / "labels.csv").write_text("file,label\nsub/clip0.mp4,maybe\n")
    assert silence_check.main([str(tmp_path)]) == 2
    assert "line 2" in capsys.readouterr().err
