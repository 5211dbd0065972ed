"""On-the-fly pseudo-fakes in the training pipeline (``config.data.pseudo_fakes``).

A share of the *real* training windows is turned into audio-visual mismatches and
labelled fake (``label`` = ``audio_fake`` = 1, category RVFA), each kind under its own
method id (``otf_<kind>``, appended to the dataset's method vocabulary, so per-method
training stats can tell them apart):

==========  ===========================================================================
shift       the window's audio streams (log-mel, waveform, ASR posteriors) taken from
            k frames earlier or later in the same clip, ``pf_shift_min <= |k| <=
            pf_shift_max`` (default 2..12 frames = 80-480 ms, both signs, uniform over
            the starts that fit); cut from inside the clip, never padded
swap        the audio streams of another real window of the same batch whose video has
            ANOTHER identity and at least as many valid frames (so nothing is padded);
            in a mixed source (``config.data.mix``) from the same dataset only
reverse     the window's waveform reversed in time, its log-mel recomputed from the
            reversed waveform (:func:`avdetect.preprocess.logmel.log_mel`, with the
            neighbouring samples as context, as the build computes it over the whole
            clip: no window-edge artefact), the ASR posteriors reversed with it
==========  ===========================================================================

``pseudo_fakes`` maps kind -> probability per real window (the sum at most 1; one uniform
draw picks at most one kind). A window that cannot be turned (a clip too short for the
shift range, no swap donor in the batch, no audio) stays real, so the realised rate can be
a little under the configured one. The older ``sync_negatives = p`` /
``sync_min_shift = d`` is the same ``shift`` with ``|k| >= d`` anywhere in the clip.

Why on the fly, next to the build-time pseudo-fakes of :mod:`avdetect.data.pseudo_fakes`:
these three kinds are cheap (arrays already in memory, at most one log-mel of the window
for ``reverse``; no decoding, no extra record reads), so the pipeline can draw a fresh lag,
donor or window for every real clip at every epoch - unbounded variety from a few dozen
real identities, the thing a small real-only training set lacks - and nothing is written
to disk. Build time stays the home of what is slow or must be fixed: TTS re-voice,
mouth re-rendering, and the evaluation sets (a test split's pseudo-fakes must be the same
clips on every run).

Determinism: every draw comes from Grain's per-element (window) or per-batch (swap) RNG,
a pure function of the seed and the position in the stream; donors are the other windows
of the same batch (a small buffer of recent real examples that needs no state and no
extra reads), so ``get_state``/``set_state`` resume gives identical batches and worker
processes give what the in-process pipeline gives.

Silence: no kind adds digital silence; ``reverse`` moves a window's leading silence, if it
has any, to its end.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import numpy as np

from avdetect import contract
from avdetect.errors import ConfigError

KINDS = ("shift", "swap", "reverse")
METHOD_PREFIX = "otf_"
AUDIO_STREAMS = ("logmel", "audio", "teacher_audio")   # what a swap / reverse replaces
RVFA = contract.CATEGORIES.index("RVFA")
# Private per-window fields the batch-level swap reads; removed before the batch leaves.
SWAP_FLAG, IDENTITY = "_otf_swap", "_otf_identity"
# Optional: the dataset a window comes from in a mixed training source (config.data.mix);
# donors must share it (avdetect/data/mix.py says why).
GROUP = "_otf_group"
_CONTEXT = 2 * contract.MEL_HOP                        # 320 samples = 2 mel hops


def method_name(kind: str) -> str:
    return METHOD_PREFIX + kind


def method_names() -> tuple[str, ...]:
    """The on-the-fly kinds' method names, appended to a dataset's vocabulary."""
    return tuple(method_name(k) for k in KINDS)


@dataclasses.dataclass(frozen=True)
class OtfSpec:
    """Parsed ``config.data.pseudo_fakes`` (+ shift range)."""

    probs: tuple[float, ...]            # per kind, in KINDS order
    shift_min: int = 2
    shift_max: int | None = 12          # None: anywhere in the clip (sync_negatives)

    @property
    def active(self) -> bool:
        return sum(self.probs) > 0

    def prob(self, kind: str) -> float:
        return self.probs[KINDS.index(kind)]

    def draw(self, rng: np.random.Generator) -> str | None:
        """The kind for one real window (None: stays real); one uniform draw."""
        u = rng.random()
        for kind, cum in zip(KINDS, np.cumsum(self.probs)):
            if u < cum:
                return kind
        return None


def _get(cfg: Any, key: str, default: Any) -> Any:
    value = cfg.get(key, default) if isinstance(cfg, Mapping) or hasattr(cfg, "get") else \
        getattr(cfg, key, default)
    return default if value is None else value


def parse(data_cfg: Any) -> OtfSpec:
    """``data.pseudo_fakes`` (kind -> probability), ``data.pf_shift_min`` /
    ``pf_shift_max`` and the ``data.sync_negatives`` alias as an :class:`OtfSpec`."""
    raw = _get(data_cfg, "pseudo_fakes", {}) or {}
    raw = dict(raw.items()) if hasattr(raw, "items") else raw
    if not isinstance(raw, Mapping):
        raise ConfigError(f"config.data.pseudo_fakes must map kind -> probability, got {raw!r}")
    unknown = sorted(set(raw) - set(KINDS))
    if unknown:
        raise ConfigError(f"config.data.pseudo_fakes: unknown on-the-fly kinds {unknown}; "
                          f"known: {list(KINDS)} (TTS, other-sentence and visual pseudo-fakes "
                          "are made at build time: avdetect/data/pseudo_fakes.py)")
    probs = {k: float(raw.get(k, 0.0) or 0.0) for k in KINDS}
    shift_min = int(_get(data_cfg, "pf_shift_min", 2))
    shift_max: int | None = int(_get(data_cfg, "pf_shift_max", 12))
    alias = float(_get(data_cfg, "sync_negatives", 0.0) or 0.0)
    if alias > 0:
        if probs["shift"] > 0:
            raise ConfigError("config.data.sync_negatives is the older name of "
                              "config.data.pseudo_fakes.shift: set only one of them")
        probs["shift"] = alias
        shift_min, shift_max = int(_get(data_cfg, "sync_min_shift", 3)), None
    bad = {k: p for k, p in probs.items() if not 0.0 <= p <= 1.0}
    if bad or sum(probs.values()) > 1.0 + 1e-9:
        raise ConfigError(f"config.data.pseudo_fakes: probabilities must lie in [0, 1] and sum "
                          f"to at most 1, got {probs}")
    if shift_min < 1 or (shift_max is not None and shift_max < shift_min):
        raise ConfigError(f"config.data.pf_shift_min/pf_shift_max: need 1 <= min <= max, got "
                          f"{shift_min}..{shift_max}")
    return OtfSpec(tuple(probs[k] for k in KINDS), shift_min, shift_max)


# ---------------------------------------------------------------------------------------
# shift
# ---------------------------------------------------------------------------------------

def shifted_start(start: int, n: int, nf: int, spec: OtfSpec,
                  rng: np.random.Generator) -> int | None:
    """An audio start for n frames at lag ``spec.shift_min <= |a - start| <=
    spec.shift_max`` inside the clip (uniform over those), or None when none fits."""
    cand = np.arange(0, nf - n + 1)
    lag = np.abs(cand - start)
    keep = lag >= max(spec.shift_min, 1)
    if spec.shift_max is not None:
        keep &= lag <= spec.shift_max
    cand = cand[keep]
    return int(rng.choice(cand)) if len(cand) else None


# ---------------------------------------------------------------------------------------
# reverse
# ---------------------------------------------------------------------------------------

def window_waveform(audio_int16: np.ndarray, a: int, n: int, context: int = 0) -> np.ndarray:
    """float32 samples [640 a - context, 640 (a + n) + context) of a clip's int16 waveform
    (zeros outside the clip), scaled as the pipeline scales the 'audio' stream."""
    spf = contract.SAMPLES_PER_FRAME
    lo, hi = spf * a - context, spf * (a + n) + context
    out = np.zeros(hi - lo, np.float32)
    src = np.asarray(audio_int16)
    s0, s1 = max(lo, 0), min(hi, len(src))
    if s1 > s0:
        out[s0 - lo:s1 - lo] = contract.from_int16(src[s0:s1])
    return out


def window_log_mel(audio_int16: np.ndarray, a: int, n: int, reverse: bool = False
                   ) -> np.ndarray:
    """float32 [4n, 80]: the log-mel of frames [a, a + n) of a clip (time-reversed with
    ``reverse``), computed like the build's whole-clip log-mel: each mel frame sees its
    real neighbouring samples (zeros only outside the clip), not a window-edge padding.

    ``log_mel(x, n + 1)`` centres frame j' on sample 160 j' of x; with 320 samples of
    context on each side, the window's frame j sits at 320 + 160 j, i.e. j' = j + 2, and
    frames j' <= 4n + 1 reach no further than the context (so no zero padding enters)."""
    from avdetect.preprocess.logmel import log_mel

    ext = window_waveform(audio_int16, a, n, context=_CONTEXT)
    if reverse:
        ext = ext[::-1]
    m = contract.MEL_PER_FRAME
    return log_mel(np.ascontiguousarray(ext), n + 1)[2:2 + m * n]


def reverse_audio(out: dict[str, np.ndarray], ex: Mapping[str, Any], a: int, n: int) -> None:
    """Replace the audio streams of window ``out`` (n valid frames, audio from clip frame
    ``a``) by their time-reversed versions, in place."""
    if "audio" not in ex:
        raise ValueError("pseudo_fakes 'reverse' needs the raw 'audio' stream in the shards "
                         "(shard format 2 or later): rebuild the dataset")
    wave = np.asarray(ex["audio"])
    spf, m = contract.SAMPLES_PER_FRAME, contract.MEL_PER_FRAME
    if "logmel" in out:
        out["logmel"][:m * n] = window_log_mel(wave, a, n, reverse=True)
    if "audio" in out:
        out["audio"][:spf * n] = window_waveform(wave, a, n)[::-1]
    if "teacher_audio" in out:
        out["teacher_audio"][:n] = out["teacher_audio"][:n][::-1]


# ---------------------------------------------------------------------------------------
# swap (batch level)
# ---------------------------------------------------------------------------------------

def mark_fake(out: dict[str, np.ndarray], method_id: int) -> None:
    """Label a turned window: fake audio over real video, under its own method id."""
    out["label"] = out["audio_fake"] = np.int32(1)
    out["category"] = np.int32(RVFA)
    out["method"] = np.int32(method_id)


def swap_in_batch(batch: dict[str, np.ndarray], rng: np.random.Generator,
                  method_id: int) -> dict[str, np.ndarray]:
    """Give every window flagged for a swap the audio streams of a donor from the same
    batch: a real, unturned window with audio, of another identity, with at least as many
    valid frames (uniform over those; none: the window stays real), and of the same
    dataset when the windows carry ``GROUP`` (a mixed source). Removes the private
    fields. Donors are read before any swap, so a donor's audio is its own."""
    batch = dict(batch)
    flag = batch.pop(SWAP_FLAG).astype(bool)
    ident = batch.pop(IDENTITY)
    group = batch.pop(GROUP, None)
    if not flag.any():
        return batch
    n_valid = batch["frame_mask"].sum(1)
    donor_ok = ((batch["label"] == 0) & ~flag & (batch["has_audio"] == 1))
    streams = [k for k in AUDIO_STREAMS if k in batch]
    source = {k: batch[k].copy() for k in streams}
    for k in streams + ["label", "audio_fake", "category", "method"]:
        batch[k] = batch[k].copy()
    per_frame = {"logmel": contract.MEL_PER_FRAME, "audio": contract.SAMPLES_PER_FRAME,
                 "teacher_audio": 1}
    for i in np.flatnonzero(flag):
        ok = donor_ok & (ident != ident[i]) & (n_valid >= n_valid[i])
        if group is not None:
            ok &= group == group[i]
        donors = np.flatnonzero(ok)
        if not len(donors):
            continue
        j = int(rng.choice(donors))
        n = int(n_valid[i])
        for k in streams:
            length = per_frame[k] * n
            batch[k][i, :length] = source[k][j, :length]
        batch["label"][i] = batch["audio_fake"][i] = 1
        batch["category"][i] = RVFA
        batch["method"][i] = method_id
    return batch
