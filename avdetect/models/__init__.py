"""Networks (flax.linen): encoders, fusion, the CAD head and LoRA.

Modules: :mod:`.layers` (shared blocks), :mod:`.visual` (mouth ResNet / face ViT),
:mod:`.audio` (SE-ResNet / Whisper-like), :mod:`.fusion` (TalkNet cross-attention,
concatenation), :mod:`.detector` (two-stream shell), :mod:`.cad` (CAD head),
:mod:`.lora` (low-rank adapters), :mod:`.encoders` (registry built from configs).
"""

from avdetect.models.audio import SEResNetAudio, WhisperLikeAudio, mfcc_from_logmel
from avdetect.models.cad import CADHead
from avdetect.models.detector import AVDetector
from avdetect.models.encoders import (build_audio_encoder, build_visual_encoder,
                                      register_audio_encoder, register_visual_encoder)
from avdetect.models.fusion import ConcatFusion, StudentFusion, TalkNetAttention
from avdetect.models.visual import FaceViT, MouthEncoder

__all__ = [
    "AVDetector", "CADHead", "ConcatFusion", "FaceViT", "MouthEncoder", "SEResNetAudio",
    "StudentFusion", "TalkNetAttention", "WhisperLikeAudio", "build_audio_encoder",
    "build_visual_encoder", "mfcc_from_logmel", "register_audio_encoder",
    "register_visual_encoder",
]
