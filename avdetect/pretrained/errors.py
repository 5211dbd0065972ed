"""Typed error for weight files that cannot be used (missing, truncated, wrong format,
unexpected layout). Like :class:`avdetect.errors.MediaError` it names the file and the
problem, so a user never sees a traceback from inside numpy or json."""

from __future__ import annotations

import os

from avdetect.errors import AVDetectError


class WeightFileError(AVDetectError):
    """A pretrained-weight file or folder that cannot be loaded.

    ``kind`` is a short machine-readable reason, ``reason`` a sentence for people.
    """

    def __init__(self, path: str | os.PathLike, reason: str, kind: str = "bad_weights"):
        self.path = os.fspath(path)
        self.reason = reason
        self.kind = kind
        super().__init__(f"{self.path}: {reason}")
