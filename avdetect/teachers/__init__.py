"""Teachers: per-frame posteriors over a shared alphabet, for the audio and the video side
of a clip, computed once at dataset build time and stored in the shards
(``teacher_audio`` / ``teacher_video``). The correlation-distillation student matches its
audio-visual similarity s_t to r_t = 1 - D(p_t, q_t) of these two posteriors.

Registry (``get_teacher(name, **kw)``):

=============  ==========  =========  =====================================================
name           alphabet    sides      source of the posteriors
=============  ==========  =========  =====================================================
``oracle``     VISEMES 14  both       the synthetic generator's ground-truth tracks
``asr_align``  VISEMES 14  audio      Whisper transcript + pocketsphinx forced alignment
``deep_avsr``  CHARS 40    as loaded  the paper's ASR/VSR nets (converted checkpoints)
=============  ==========  =========  =====================================================

``alphabet.py`` explains the choice of alphabet per teacher. A side not in ``sides`` is
returned uniform; builders should store it with its has-teacher flag False (r_t is only
meaningful where both sides are real). ``PairedTeacher`` takes the audio side of one
teacher and the video side of another (same alphabet) to make a two-sided teacher.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Protocol, runtime_checkable

import numpy as np

from avdetect.teachers import alphabet, posteriors


@runtime_checkable
class Teacher(Protocol):
    """A callable mapping one clip to (audio_post [T, K], video_post [T, K]) float32 rows
    that sum to 1, or None when it cannot say anything about the clip."""
    name: str
    num_classes: int            # K
    sides: frozenset[str]       # which of {'audio', 'video'} carry real information

    def __call__(self, *, audio: np.ndarray | None, mouth: np.ndarray | None,
                 num_frames: int, meta: dict) -> tuple[np.ndarray, np.ndarray] | None:
        ...


class PairedTeacher:
    """Audio side from ``audio_teacher``, video side from ``video_teacher`` (both over the
    same alphabet). None when either says nothing about the clip."""

    def __init__(self, audio_teacher: Teacher, video_teacher: Teacher):
        if audio_teacher.num_classes != video_teacher.num_classes:
            raise ValueError(f"cannot pair {audio_teacher.name} (K={audio_teacher.num_classes}) "
                             f"with {video_teacher.name} (K={video_teacher.num_classes})")
        self.audio_teacher, self.video_teacher = audio_teacher, video_teacher
        self.name = f"{audio_teacher.name}+{video_teacher.name}"
        self.num_classes = audio_teacher.num_classes
        self.sides = (frozenset({"audio"}) & audio_teacher.sides) | (
            frozenset({"video"}) & video_teacher.sides)

    def __call__(self, *, audio, mouth, num_frames, meta):
        a = self.audio_teacher(audio=audio, mouth=mouth, num_frames=num_frames, meta=meta)
        v = self.video_teacher(audio=audio, mouth=mouth, num_frames=num_frames, meta=meta)
        if a is None or v is None:
            return None
        return a[0], v[1]


class BuildTeacher:
    """Adapter from a ``Teacher`` to the dataset builder's ``teacher(features, row)``
    callable (``avdetect.data.build``): ``features`` is the clip's preprocessed
    ``ClipFeatures`` (or a mapping with ``mouth``), ``row`` its listing row.

    The clip's 16 kHz audio is decoded only for teachers that read it (``needs_audio``),
    from ``row['audio_path']`` when the row names a separate audio source (CMDFD W2L clips),
    else ``row['path']`` (the builders put the absolute video path there). A clip without
    an audio stream gets ``audio=None``. ``cache_key`` names the teacher and its options,
    so the builder's cache is invalidated when either changes. Picklable: it is shipped
    to the builder's worker processes, where the teacher loads its models lazily.
    """

    def __init__(self, teacher: Teacher, **options: Any):
        self.teacher = teacher
        self.needs_audio = getattr(teacher, "needs_audio", True)
        opts = ",".join(f"{k}={options[k]!r}" for k in sorted(options))
        self.cache_key = f"avdetect.teachers.{teacher.name}({opts})"

    def __call__(self, features: Any, row: dict) -> tuple[np.ndarray, np.ndarray] | None:
        mouth = features["mouth"] if isinstance(features, Mapping) else features.mouth
        num_frames = int(np.asarray(mouth).shape[0])
        audio = None
        if self.needs_audio:
            from avdetect.errors import NoAudioStreamError
            from avdetect.media import decode
            source = row.get("audio_path") or row.get("path")
            if source:
                try:
                    audio = decode.load_audio(source, num_frames=num_frames)
                except NoAudioStreamError:
                    audio = None
        return self.teacher(audio=audio, mouth=mouth, num_frames=num_frames, meta=dict(row))


def build_teacher(name: str, **kw: Any) -> BuildTeacher:
    """``get_teacher(name, **kw)`` wrapped for ``avdetect.data.build`` (see BuildTeacher)."""
    return BuildTeacher(get_teacher(name, **kw), **kw)


def _oracle(**kw) -> Teacher:
    from avdetect.teachers.oracle import OracleTeacher
    return OracleTeacher(**kw)


def _asr_align(**kw) -> Teacher:
    from avdetect.teachers.asr_align import AsrAlignTeacher
    return AsrAlignTeacher(**kw)


def _deep_avsr(**kw) -> Teacher:
    from avdetect.teachers.deep_avsr import DeepAVSRTeacher
    return DeepAVSRTeacher(**kw)


TEACHERS: dict[str, Callable[..., Teacher]] = {
    "oracle": _oracle,
    "asr_align": _asr_align,
    "deep_avsr": _deep_avsr,
}


def get_teacher(name: str, **kw: Any) -> Teacher:
    """Build the teacher registered under ``name`` with keyword options ``kw``
    (see each teacher's class docstring)."""
    if name not in TEACHERS:
        raise ValueError(f"unknown teacher {name!r}; available: {sorted(TEACHERS)}")
    return TEACHERS[name](**kw)


__all__ = ["Teacher", "PairedTeacher", "BuildTeacher", "TEACHERS", "get_teacher",
           "build_teacher", "alphabet", "posteriors"]
