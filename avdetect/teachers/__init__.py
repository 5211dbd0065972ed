"""Teachers: per-frame posteriors over a shared alphabet, for the audio and the video side
of a clip, computed once at dataset build time and stored in the shards
(``teacher_audio`` / ``teacher_video``). The correlation-distillation student matches its
audio-visual similarity s_t to r_t = 1 - D(p_t, q_t) of these two posteriors.

Registry (``get_teacher(name, **kw)``; ``--teacher`` of ``python -m avdetect.data.build``
goes through :func:`resolve_teacher`):

=============  ==========  =========  =====================================================
name           alphabet    sides      source of the posteriors
=============  ==========  =========  =====================================================
``oracle``     VISEMES 14  both       the synthetic generator's ground-truth tracks
``asr_align``  VISEMES 14  audio      Whisper transcript + pocketsphinx forced alignment
``vsr_self``   VISEMES 14  video      the project's own lip reader, distilled from
                                      asr_align on real clips (``vsr_self.py``; weights
                                      made by its train command, ``vsr_self:PATH``)
``deep_avsr``  CHARS 40    as loaded  the paper's ASR/VSR nets + visual front end
                                      (converted checkpoints: ``deep_avsr:DIR``)
=============  ==========  =========  =====================================================

``--teacher`` forms: ``NAME``, ``NAME:VALUE`` (the teacher's positional option, e.g. the
converted-checkpoint folder of ``deep_avsr``), ``NAME:key=value,...``, a pair
``AUDIO+VIDEO`` (audio side of the first, video side of the second, same alphabet, e.g.
``asr_align+vsr_self``), or ``package.module:function`` for a user's own
``teacher(features, row)``. More teachers plug in with :func:`register_teacher`.

``alphabet.py`` explains the choice of alphabet per teacher. A side not in ``sides`` is
returned uniform by the teacher; the builder stores it as absent (zeros, with its per-side
flag False, and the dataset metadata lists ``teacher.sides``): r_t is only meaningful
where both sides are real, and training refuses a dataset lacking a side its losses need.
"""

from __future__ import annotations

import importlib
import re
from typing import Any, Callable, Mapping, Protocol, runtime_checkable

import numpy as np

from avdetect import contract
from avdetect.teachers import alphabet, posteriors

SIDES = frozenset({"audio", "video"})


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
        self.needs_audio = any(getattr(t, "needs_audio", True)
                               for t in (audio_teacher, video_teacher))

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

    def __init__(self, teacher: Teacher, *, spec: str | None = None, **options: Any):
        self.teacher = teacher
        self.name = spec or teacher.name
        self.sides = frozenset(teacher.sides)
        self.num_classes = teacher.num_classes
        self.needs_audio = getattr(teacher, "needs_audio", True)
        if spec:        # the --teacher value names the teacher and all its options
            self.cache_key = f"avdetect.teachers.{spec}"
        else:
            opts = ",".join(f"{k}={options[k]!r}" for k in sorted(options))
            self.cache_key = f"avdetect.teachers.{teacher.name}({opts})"

    def __call__(self, features: Any, row: dict) -> tuple[np.ndarray, np.ndarray] | None:
        def field(name):
            return (features.get(name) if isinstance(features, Mapping)
                    else getattr(features, name, None))

        mouth = field("mouth")
        num_frames = int(np.asarray(mouth).shape[0])
        audio = None
        # The waveform the preprocessing decoded (or borrowed) for this clip: the teacher
        # hears the same samples without a second decode; decoded here only when the
        # preprocessing kept none.
        kept = field("audio") if self.needs_audio else None
        if kept is not None:
            kept = np.asarray(kept)
            audio = (contract.from_int16(kept) if kept.dtype == np.int16
                     else kept.astype(np.float32, copy=False))
        elif self.needs_audio:
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
    """``get_teacher(name, **kw)`` wrapped for ``avdetect.data.build`` (see BuildTeacher);
    without options it is what ``--teacher NAME`` builds (same cache key)."""
    if not kw:
        return BuildTeacher(get_teacher(name), spec=name)
    return BuildTeacher(get_teacher(name, **kw), **kw)


# --------------------------------------------------------------------------- registry

def _oracle(**kw) -> Teacher:
    from avdetect.teachers.oracle import OracleTeacher
    return OracleTeacher(**kw)


def _asr_align(**kw) -> Teacher:
    from avdetect.teachers.asr_align import AsrAlignTeacher
    return AsrAlignTeacher(**kw)


def _deep_avsr(**kw) -> Teacher:
    from avdetect.teachers.deep_avsr import DeepAVSRTeacher
    return DeepAVSRTeacher(**kw)


def _vsr_self(**kw) -> Teacher:
    # Refuses (ConfigError naming the file and the retrain command) when no weights file
    # is there: a build that names it must not silently store uniform video posteriors.
    from avdetect.teachers.vsr_self import VsrSelfTeacher
    return VsrSelfTeacher(**kw)


TEACHERS: dict[str, Callable[..., Teacher]] = {}
# Keyword a bare ``NAME:ARG`` fills, per teacher (``deep_avsr:DIR`` -> params_dir=DIR).
POSITIONAL_OPTION: dict[str, str | None] = {}


def register_teacher(name: str, factory: Callable[..., Teacher], *,
                     positional: str | None = None) -> None:
    """Make ``--teacher NAME[:ARGS]`` build ``factory(**options)``. ``positional`` names
    the keyword a bare ``NAME:VALUE`` sets (e.g. ``params_dir``); ``NAME:k=v,k2=v2`` sets
    keywords explicitly. Re-registering a name replaces it (how ``vsr_self`` lands)."""
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise ValueError(f"teacher names are lower-case identifiers, got {name!r}")
    TEACHERS[name] = factory
    POSITIONAL_OPTION[name] = positional


register_teacher("oracle", _oracle)
register_teacher("asr_align", _asr_align)
register_teacher("deep_avsr", _deep_avsr, positional="params_dir")
register_teacher("vsr_self", _vsr_self, positional="weights")


def get_teacher(name: str, **kw: Any) -> Teacher:
    """Build the teacher registered under ``name`` with keyword options ``kw``
    (see each teacher's class docstring)."""
    if name not in TEACHERS:
        raise ValueError(f"unknown teacher {name!r}; available: {sorted(TEACHERS)}")
    return TEACHERS[name](**kw)


def _option_value(text: str) -> Any:
    """'0.2' -> 0.2, '3' -> 3, 'none' -> None, 'true'/'false' -> bool, else the text."""
    low = text.lower()
    if low in ("none", "null"):
        return None
    if low in ("true", "false"):
        return low == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_options(name: str, args: str) -> dict[str, Any]:
    """The ARGS of ``NAME:ARGS``: ``k=v,k2=v2`` keywords, or one bare value for the
    teacher's positional option (a path may hold ',' or '=' only in this form if it
    has no '=': ``deep_avsr:/models/avsr``)."""
    from avdetect.errors import ConfigError
    if not args:
        return {}
    if "=" not in args:
        key = POSITIONAL_OPTION.get(name)
        if key is None:
            raise ConfigError(f"teacher {name!r} takes no bare argument (got {args!r}); "
                              f"give options as {name}:key=value,...")
        return {key: args}
    out = {}
    for part in args.split(","):
        key, eq, value = part.partition("=")
        if not eq or not key.strip():
            raise ConfigError(f"teacher {name!r}: option {part!r} is not key=value")
        out[key.strip()] = _option_value(value.strip())
    return out


def _registered(spec: str) -> Teacher:
    from avdetect.errors import ConfigError
    name, _, args = spec.partition(":")
    name = name.strip()
    if name not in TEACHERS:
        raise ConfigError(f"unknown teacher {name!r} in --teacher {spec!r}; available: "
                          f"{sorted(TEACHERS)}, pairs AUDIO+VIDEO, or package.module:function")
    try:
        return get_teacher(name, **parse_options(name, args))
    except TypeError as e:          # an option the teacher does not take
        raise ConfigError(f"--teacher {spec!r}: {e}") from e


def resolve_teacher(spec: str) -> Any:
    """The build's teacher callable for a ``--teacher`` value:

    * ``NAME[:ARGS]`` - a registered teacher (``oracle``, ``asr_align``, ``vsr_self``,
      ``deep_avsr:DIR``; see :func:`parse_options`), wrapped in :class:`BuildTeacher`;
    * ``A+B`` - the audio side of A and the video side of B (:class:`PairedTeacher`),
      e.g. ``asr_align+vsr_self``; each must fill the side it is taken for;
    * ``package.module:function`` - a user's ``teacher(features, row)`` (see
      ``avdetect.data.build``); it fills both sides unless it has a ``sides`` attribute.
    Raises ConfigError naming what is wrong.
    """
    from avdetect.errors import ConfigError
    spec = spec.strip()
    head = spec.partition(":")[0]
    if "+" in head or ("+" in spec and head in TEACHERS):
        parts = spec.split("+")
        if len(parts) != 2 or not all(p.strip() for p in parts):
            raise ConfigError(f"--teacher {spec!r}: a pair is AUDIO_TEACHER+VIDEO_TEACHER")
        a, v = (_registered(p.strip()) for p in parts)
        for t, side in ((a, "audio"), (v, "video")):
            if side not in t.sides:
                raise ConfigError(f"--teacher {spec!r}: {t.name} fills no {side} side "
                                  f"(its sides: {sorted(t.sides)})")
        try:
            pair = PairedTeacher(a, v)
        except ValueError as e:
            raise ConfigError(f"--teacher {spec!r}: {e}") from e
        return BuildTeacher(pair, spec=spec)
    if head in TEACHERS:
        return BuildTeacher(_registered(spec), spec=spec)
    if ":" in spec:
        return _load_callable(spec)
    raise ConfigError(f"unknown teacher {spec!r}; available: {sorted(TEACHERS)}, pairs "
                      "AUDIO+VIDEO, or package.module:function")


def _load_callable(spec: str):
    """'package.module:function' -> the function (a user teacher for --teacher)."""
    from avdetect.errors import ConfigError
    module, _, attr = spec.partition(":")
    if not module or not attr:
        raise ConfigError(f"expected 'package.module:function', got {spec!r}")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"cannot load {spec!r}: {e}") from e


def teacher_sides(teacher: Any) -> list[str]:
    """Sorted sides a build teacher fills (a user function without ``sides``: both)."""
    sides = getattr(teacher, "sides", None)
    if sides is None:
        sides = getattr(getattr(teacher, "teacher", None), "sides", None)
    return sorted(SIDES if sides is None else sides)


__all__ = ["Teacher", "PairedTeacher", "BuildTeacher", "TEACHERS", "SIDES", "get_teacher",
           "build_teacher", "register_teacher", "resolve_teacher", "parse_options",
           "teacher_sides", "alphabet", "posteriors"]
