"""Typed errors for bad input. Every error names the file and says what is wrong with it,
so a user (or a dataset build report) never sees a traceback from inside a library."""

from __future__ import annotations

import os


class AVDetectError(Exception):
    """Base class of every error avdetect raises on purpose."""


class MediaError(AVDetectError):
    """A media file that cannot be used. ``kind`` is a short machine-readable reason
    (e.g. ``"empty_file"``), ``reason`` a sentence for people."""

    kind = "media_error"

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class FileMissingError(MediaError):
    kind = "missing_file"


class EmptyFileError(MediaError):
    kind = "empty_file"


class NotMediaError(MediaError):
    """The file is not a container that FFmpeg can open (text renamed .mp4, ...)."""
    kind = "not_media"


class NoVideoStreamError(MediaError):
    kind = "no_video_stream"


class NoAudioStreamError(MediaError):
    kind = "no_audio_stream"


class CorruptMediaError(MediaError):
    """Truncated or damaged data: the container opens but decoding fails."""
    kind = "corrupt"


class TooShortError(MediaError):
    kind = "too_short"


class NoFaceError(MediaError):
    kind = "no_face"


class ConfigError(AVDetectError):
    """A configuration value that cannot work, with the key and the reason."""


class CheckpointError(AVDetectError):
    """A checkpoint or model file that cannot be used (missing, or written by another job
    shape or format)."""
