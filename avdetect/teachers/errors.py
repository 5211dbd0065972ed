"""Typed errors of the teachers: each names the file and says what is wrong with it.

They subclass ``avdetect.errors.MediaError`` so a dataset build report files them with
the other bad inputs (``.path``, ``.reason``, ``.kind``)."""

from __future__ import annotations

from avdetect.errors import MediaError


class CheckpointError(MediaError):
    """A teacher weight file that cannot be used: unreadable, not a tensor-only state
    dict, or with missing / unexpected / wrongly shaped entries."""
    kind = "bad_checkpoint"


class GroundTruthError(MediaError):
    """A generator ground-truth file (``<clip_id>.npz`` or ``alphabet.json``) that is
    missing fields, inconsistent, or names phones the shared alphabet does not know."""
    kind = "bad_ground_truth"


class AlignmentError(MediaError):
    """Speech that neither forced alignment nor phone recognition could segment."""
    kind = "alignment_failed"
