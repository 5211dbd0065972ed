"""The shard format: the TFDS FeaturesDict of one video-level example (the per-frame image
codecs and format constants live in :mod:`avdetect.data.codec`).

One example is one whole video (variable length T). Crops are stored as one encoded image
per frame so the Grain pipeline decodes only the frames of the window it cuts, never the
whole video. Everything here reads back through ``tfds.data_source`` without TensorFlow.

Example fields (T frames, K teacher classes, S face side):

    video_id        text    unique key of the clip inside the dataset
    source_path     text    path of the source file, relative to the dataset root
    num_frames      int32   T
    mouth           bytes [T]   encoded grayscale 88x88 mouth crops (PNG by default)
    face            bytes [T]   encoded RGB SxS face crops (JPEG by default)
    logmel          float16 [4T, 80]
    audio           int16 [640 T]   the 16 kHz waveform (Whisper's input; zeros if no audio)
    face_found      bool [T]    the face detector found a face in that frame
    boxes           float32 [T, 4]  smoothed face box (x, y, w, h) in source pixels
    lips            float32 [T, 20, 2]  lip landmarks in the aligned face, / its 256 px side
                                (zeros when the preprocessing gave none: has_lips False)
    has_lips        bool
    has_audio       bool    False: no usable audio track, logmel is zeros
    audio_source    text    file the audio was taken from ('' = the clip's own audio)
    teacher_audio   float32 [T, K]  per-frame posteriors of the audio teacher (zeros if absent)
    teacher_video   float32 [T, K]  per-frame posteriors of the visual teacher (zeros if absent)
    has_teacher_audio, has_teacher_video   bool   that side was filled by the teacher
    has_teacher     bool    both sides were (the correlation target needs both)
    label           ClassLabel(real, fake)
    video_fake      bool, audio_fake bool
    category        ClassLabel(RVRA, RVFA, FVRA, FVFA)
    method          text    generation method ('real' for real clips)
    identity        text    identity shown in the video
    src_fps, src_sample_rate, duration_s   what the source file had before resampling
    attributes      text    JSON object of dataset-specific row fields (race, gender, ...)
"""

from __future__ import annotations

import json
from typing import Any, Mapping

import numpy as np
import tensorflow_datasets as tfds

from avdetect import contract
from avdetect.data.codec import TEACHER_DIM_DEFAULT


def clip_features(teacher_dim: int = TEACHER_DIM_DEFAULT) -> tfds.features.FeaturesDict:
    """The FeaturesDict every avdetect dataset shares (see the module docstring)."""
    Tensor = tfds.features.Tensor
    return tfds.features.FeaturesDict({
        "video_id": tfds.features.Text(),
        "source_path": tfds.features.Text(),
        "num_frames": np.int32,
        "mouth": Tensor(shape=(None,), dtype=np.object_),
        "face": Tensor(shape=(None,), dtype=np.object_),
        "logmel": Tensor(shape=(None, contract.N_MELS), dtype=np.float16),
        "audio": Tensor(shape=(None,), dtype=np.int16),
        "face_found": Tensor(shape=(None,), dtype=np.bool_),
        "boxes": Tensor(shape=(None, 4), dtype=np.float32),
        "lips": Tensor(shape=(None, contract.NUM_LIPS, 2), dtype=np.float32),
        "has_lips": np.bool_,
        "has_audio": np.bool_,
        "audio_source": tfds.features.Text(),
        # float32: float16 flushes small probabilities to 0 (infinite divergences)
        "teacher_audio": Tensor(shape=(None, teacher_dim), dtype=np.float32),
        "teacher_video": Tensor(shape=(None, teacher_dim), dtype=np.float32),
        "has_teacher": np.bool_,
        "has_teacher_audio": np.bool_,
        "has_teacher_video": np.bool_,
        "label": tfds.features.ClassLabel(names=list(contract.LABEL_NAMES)),
        "video_fake": np.bool_,
        "audio_fake": np.bool_,
        "category": tfds.features.ClassLabel(names=list(contract.CATEGORIES)),
        "method": tfds.features.Text(),
        "identity": tfds.features.Text(),
        "src_fps": np.float32,
        "src_sample_rate": np.int32,
        "duration_s": np.float32,
        "attributes": tfds.features.Text(),
    })


def attributes_json(attrs: Mapping[str, Any]) -> str:
    """Dataset-specific row fields as a stable JSON string (sorted keys)."""
    return json.dumps({str(k): attrs[k] for k in sorted(attrs)}, default=str)
