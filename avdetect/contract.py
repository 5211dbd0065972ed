"""The data contract: one home for the rates, sizes and label vocabularies that every
stage (media decoding, preprocessing, dataset builders, models) must agree on.

A clip is T video frames at 25 fps and 16 kHz mono audio; the log-mel has exactly
4 frames per video frame (10 ms hop), so a window of T video frames is 4T mel frames.
"""

from __future__ import annotations

VIDEO_FPS = 25                      # frames per second of every decoded clip
AUDIO_SR = 16_000                   # samples per second of every decoded clip (mono)
SAMPLES_PER_FRAME = AUDIO_SR // VIDEO_FPS   # 640 audio samples per video frame

# Log-mel front end of the student (25 ms window, 10 ms hop, 80 mels, librosa filters).
N_MELS = 80
MEL_WIN = 400                       # 25 ms at 16 kHz
MEL_HOP = 160                       # 10 ms at 16 kHz
MEL_NFFT = 512                      # window zero-padded to the next power of two
MEL_FMIN = 0.0
MEL_FMAX = 8_000.0
MEL_PER_FRAME = SAMPLES_PER_FRAME // MEL_HOP   # 4 mel frames per video frame
LOG_FLOOR = 1e-6                    # log(mel + LOG_FLOOR)

# Mouth crops follow the LRS / AV-HuBERT convention: a 96x96 region around the mouth,
# centre-cropped to 88x88, grayscale.
MOUTH_ROI = 96
MOUTH_SIZE = 88
FACE_SIZE_DEFAULT = 112             # RGB face crop side (224 for CLIP encoders)
NUM_LIPS = 20                       # lip landmarks per frame (the 'lips' stream, [T, 20, 2])
# Indices into those 20 points (dlib's mouth order, avdetect/preprocess/landmarks.LIP_POINTS:
# 12 outer from the image-left corner, then 8 inner): the mouth corners, and the inner
# upper / lower lip middles whose distance is the mouth opening.
LIP_CORNERS = (0, 6)
LIP_INNER_MIDDLES = (14, 18)

# Streams: the per-window arrays a batch may carry (shapes in avdetect/data/features.py).
# The default ones are cut when config.data.inputs lists nothing; the opt-in ones only
# when it names them (shards older than format 2 lack 'audio', older than format 4 'lips').
# Teacher posteriors exist only in training data, never at inference.
TEACHER_STREAMS = ("teacher_audio", "teacher_video")
DEFAULT_STREAMS = ("mouth", "face", "logmel") + TEACHER_STREAMS
OPT_IN_STREAMS = ("audio", "lips")
ALL_STREAMS = DEFAULT_STREAMS + OPT_IN_STREAMS
INFERENCE_STREAMS = tuple(s for s in ALL_STREAMS if s not in TEACHER_STREAMS)


def streams_for(inputs, among: tuple[str, ...] = ALL_STREAMS) -> tuple[str, ...]:
    """The streams of ``among`` a method reads, given ``config.data.inputs``: those it
    names, or every default stream when it names none; in ``among``'s order."""
    inputs = tuple(inputs or ())
    if not inputs:
        return tuple(s for s in among if s not in OPT_IN_STREAMS)
    return tuple(s for s in among if s in inputs)


# Labels. Categories follow FakeAVCeleb: R/F = real/fake, V/A = video/audio.
CATEGORIES = ("RVRA", "RVFA", "FVRA", "FVFA")
LABEL_NAMES = ("real", "fake")
# Optional float32 [B] training-batch key: each window's weight in the detection loss
# (config.data.real_share draws reals more often and weights them back; absent = 1).
SAMPLE_WEIGHT = "sample_weight"
# Optional int32 [B] training-batch key: 1 where the window's lips are driven by its own
# audio - untouched real windows, and the windows of the manipulations listed in
# config.data.synced_manipulations (audio-driven generators: their lips follow the audio
# by construction). The synchrony losses learn from these windows; absent = label == 0.
AV_SYNCED = "av_synced"

assert SAMPLES_PER_FRAME * VIDEO_FPS == AUDIO_SR
assert MEL_PER_FRAME * MEL_HOP == SAMPLES_PER_FRAME


def category_of(video_fake: bool, audio_fake: bool) -> str:
    """FakeAVCeleb category name for a clip with the given manipulated modalities."""
    return ("F" if video_fake else "R") + "V" + ("F" if audio_fake else "R") + "A"


# Digital silence: samples whose magnitude is at most SILENCE_ABS_MAX (two int16 steps:
# dither-free encoders and zero padding give exact zeros, AAC/MP3 decoders a step or two
# around them), over whole 640-sample video frames. FakeAVCeleb-style fakes begin with it
# and can be told apart on that alone (AVH-Align), so evaluation also reports every
# figure with the leading/trailing run trimmed (avdetect.evaluation).
# int16 PCM (the shards' 'audio' stream) <-> float in [-1, 1): x / INT16_SCALE.
INT16_SCALE = 32768.0
SILENCE_ABS_MAX = 2.0 / INT16_SCALE
_SILENCE_INT16_MAX = 2


def to_int16(audio):
    """float waveform in [-1, 1] -> int16 PCM: ``round(x * INT16_SCALE)`` clipped to the
    int16 range (so +1.0 becomes 32767 and every int16 value survives a round trip
    through :func:`from_int16`)."""
    import numpy as np

    x = np.asarray(audio, np.float64) * INT16_SCALE
    return np.clip(np.round(x), -32768, 32767).astype(np.int16)


def from_int16(pcm):
    """int16 PCM -> float32 waveform in [-1, 1)."""
    import numpy as np

    return np.asarray(pcm).astype(np.float32) / np.float32(INT16_SCALE)


def fit_length(x, length: int, mode: str = "constant"):
    """``x`` cut or padded along its first axis to exactly ``length`` rows: how every
    stream is brought to the contract's length (640 T samples, T frames).

    ``mode`` is how missing rows are made (``numpy.pad`` modes), which depends on what
    the rows are: ``"constant"`` zeros (audio: missing samples are silence),
    ``"edge"`` the last row repeated (a per-frame track a frame or two short of the
    decoded video: the frame would most plausibly show the same), ``"wrap"`` rows from
    the start again (the Deep-AVSR reference loader's convention)."""
    import numpy as np

    x = np.asarray(x)
    if length < 0:
        raise ValueError(f"fit_length: length must be >= 0, got {length}")
    if x.shape[0] >= length:
        return x[:length]
    if x.shape[0] == 0 and mode != "constant":
        raise ValueError(f"fit_length: cannot extend an empty array in {mode!r} mode")
    pad = [(0, length - x.shape[0])] + [(0, 0)] * (x.ndim - 1)
    return np.pad(x, pad, mode=mode)


def digital_silence(audio) -> tuple[int, int]:
    """``(lead, trail)``: the numbers of whole video frames (640 samples each) of digital
    silence at the start and at the end of a mono waveform.

    ``audio`` is int16 PCM (silent: ``|x| <= 2``) or float in [-1, 1] (silent:
    ``|x| <= SILENCE_ABS_MAX``), length ``640 T`` (a trailing partial frame is ignored).
    A clip that is silent throughout has ``lead == trail == T``; otherwise
    ``lead + trail < T`` and the sounding span is frames ``[lead, T - trail)``.
    """
    import numpy as np

    x = np.asarray(audio)
    if x.ndim != 1:
        raise ValueError(f"digital_silence expects mono audio [N], got shape {x.shape}")
    t = len(x) // SAMPLES_PER_FRAME
    frames = x[:t * SAMPLES_PER_FRAME].reshape(t, SAMPLES_PER_FRAME)
    if x.dtype.kind in "iu":
        peak = np.abs(frames.astype(np.int32)).max(axis=1) if t else np.zeros(0)
        silent = peak <= _SILENCE_INT16_MAX
    elif x.dtype.kind == "f":
        peak = np.abs(frames).max(axis=1) if t else np.zeros(0)
        silent = peak <= SILENCE_ABS_MAX
    else:
        raise ValueError(f"digital_silence expects int16 or float audio, got {x.dtype}")
    if silent.all():
        return t, t
    sounding = np.flatnonzero(~silent)
    return int(sounding[0]), int(t - 1 - sounding[-1])

# Evaluation windows carry a 'view' bit mask (avdetect.data.pipeline, with
# config.eval.trim_silence): the as-is report reads the windows with VIEW_AS_IS set, the
# silence-trimmed report those with VIEW_TRIMMED set (a video without leading/trailing
# silence has one set of windows serving both views).
VIEW_AS_IS = 1
VIEW_TRIMMED = 2
