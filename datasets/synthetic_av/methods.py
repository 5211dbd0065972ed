"""The manipulation methods of the benchmark: what each one changes, as data.

Each method is a (video operation, audio operation) pair; the combined methods
(FakeVideo-FakeAudio) are a video method with an audio method. Categories follow
FakeAVCeleb from which modality was manipulated:

==========================  ===========  ===========  =====  ======  ========================
method                      video op     audio op     cat.   sync    region (video)
==========================  ===========  ===========  =====  ======  ========================
real                        original     original     RVRA   ok      none
lipsync                     lipsync      other_take   FVRA   ok      mouth (lower face)
faceswap                    faceswap     original     FVRA   ok      face
talkinghead                 talkinghead  original     FVRA   ok      face
voiceclone                  original     voiceclone   RVFA   broken  none
voiceconvert                original     voiceconvert RVFA   ok      none
desync                      original     desync       RVFA   broken  none
faceswap+voiceclone         faceswap     voiceclone   FVFA   broken  face
lipsync+voiceclone          lipsync      voiceclone   FVFA   ok      mouth (lower face)
talkinghead+voiceconvert    talkinghead  voiceconvert FVFA   ok      face
==========================  ===========  ===========  =====  ======  ========================

Audio operations: ``original`` = the source recording's speech; ``other_take`` = the same
person's voice saying other words (a real recording of them, so lipsync stays FVRA);
``voiceclone`` = another voice saying other words; ``voiceconvert`` = the same words with
the same phone timing in another voice through a vocoder; ``desync`` = the original
speech shifted by 80-400 ms.

``desync`` is filed under RVFA (the audio track was edited; the video is untouched) with
``sync_fake`` = 1. ``sync_fake`` marks clips whose mouth does not follow the audio's
speech (other words, or shifted timing); talking heads are synced in time but make the
wrong mouth shapes, which ``sync_fake`` does not claim to capture.
"""

from __future__ import annotations

import dataclasses
from types import MappingProxyType

from avdetect import contract

VIDEO_OPS = ("original", "lipsync", "faceswap", "talkinghead")
AUDIO_OPS = ("original", "other_take", "voiceclone", "voiceconvert", "desync")


@dataclasses.dataclass(frozen=True)
class Method:
    name: str
    video_op: str
    audio_op: str
    sync_fake: bool
    region: str        # video region manipulated: 'none' | 'mouth' | 'face'

    @property
    def video_fake(self) -> bool:
        return self.video_op != "original"

    @property
    def audio_fake(self) -> bool:
        # another take of the same person is real audio (the lip-sync fake is FVRA)
        return self.audio_op not in ("original", "other_take")

    @property
    def category(self) -> str:
        return contract.category_of(self.video_fake, self.audio_fake)

    @property
    def needs_donor(self) -> bool:
        return self.video_op == "faceswap"

    @property
    def needs_other_voice(self) -> bool:
        return self.audio_op in ("voiceclone", "voiceconvert")

    @property
    def needs_other_text(self) -> bool:
        return self.audio_op in ("other_take", "voiceclone")


_TABLE = (
    Method("real", "original", "original", False, "none"),
    Method("lipsync", "lipsync", "other_take", False, "mouth"),
    Method("faceswap", "faceswap", "original", False, "face"),
    Method("talkinghead", "talkinghead", "original", False, "face"),
    Method("voiceclone", "original", "voiceclone", True, "none"),
    Method("voiceconvert", "original", "voiceconvert", False, "none"),
    Method("desync", "original", "desync", True, "none"),
    Method("faceswap+voiceclone", "faceswap", "voiceclone", True, "face"),
    Method("lipsync+voiceclone", "lipsync", "voiceclone", False, "mouth"),
    Method("talkinghead+voiceconvert", "talkinghead", "voiceconvert", False, "face"),
)
METHODS: MappingProxyType[str, Method] = MappingProxyType({m.name: m for m in _TABLE})
FAKE_METHODS = tuple(m.name for m in _TABLE if m.name != "real")

# FakeAVCeleb's folder names of the four categories.
CATEGORY_FOLDERS = MappingProxyType({
    "RVRA": "RealVideo-RealAudio", "RVFA": "RealVideo-FakeAudio",
    "FVRA": "FakeVideo-RealAudio", "FVFA": "FakeVideo-FakeAudio",
})
