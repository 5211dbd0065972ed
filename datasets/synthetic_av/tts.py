"""Text-to-speech with exact phone timing: espeak-ng's C library through ctypes.

espeak-ng is initialised with phoneme events (``espeakINITIALIZE_PHONEME_EVENTS``) in
synchronous mode; its synth callback hands over the 22.05 kHz int16 samples together
with one ``espeakEVENT_PHONEME`` per phone, carrying the sample index where that phone
starts. So the phone segmentation is what the synthesiser actually did, not an
alignment estimate. Speech is resampled to 16 kHz (``contract.AUDIO_SR``) with a
polyphase filter and the phone boundaries are scaled with it.

Determinism: espeak-ng keeps state between calls (its pitch-flutter phase and noise
generator run on), so the same text synthesised twice in one process gives slightly
different samples and boundaries. Each utterance is therefore synthesised in a child
process forked from a small server process whose espeak-ng has been initialised but has
never spoken (``serve``; one server per client process, started on first use): every
synthesis starts from the same state, and an utterance's samples depend only on
(text, voice), not on what the worker synthesised before. This is what makes the
benchmark identical for any number of workers.

Phone names: espeak's ASCII mnemonics are mapped to ARPAbet (39 phones + ``SIL``) with
the table of ``avdetect.teachers.alphabet``, the project's one home for phone and viseme
spellings.
"""

from __future__ import annotations

import atexit
import ctypes
import dataclasses
import os
import pathlib
import pickle
import re
import struct
import subprocess
import sys
from math import gcd

import numpy as np

from avdetect import contract
from avdetect.errors import AVDetectError
from avdetect.teachers import alphabet

# ARPAbet phone inventory of the generated tracks: index 0 is silence. The order is the
# alphabet module's table order, so it is stable across runs and machines.
PHONES: tuple[str, ...] = ("SIL",) + tuple(p for p in alphabet.ARPABET_TO_VISEME if p != "SIL")
PHONE_INDEX = {p: i for i, p in enumerate(PHONES)}
SILENCE = "SIL"

_LIB_NAME = "libespeak-ng.so.1"
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_PHONEME_EVENTS = 0x0001
_EVENT_LIST_TERMINATED = 0
_EVENT_END = 5
_EVENT_MSG_TERMINATED = 6
_EVENT_PHONEME = 7
_PARAM_RATE, _PARAM_VOLUME, _PARAM_PITCH, _PARAM_RANGE = 1, 2, 3, 4
_CHARS_UTF8 = 1
_POS_CHARACTER = 1


class TTSError(AVDetectError):
    """espeak-ng is missing or failed to synthesise a text."""


@dataclasses.dataclass(frozen=True)
class Voice:
    """One synthetic speaker: an espeak-ng voice plus prosody settings."""
    name: str            # espeak-ng voice with variant, e.g. "en-us+m3"
    pitch: int = 50      # 0..100, 50 = the variant's own base pitch
    rate: int = 170      # words per minute
    range: int = 50      # pitch range 0..100 (0 = monotone)
    gain: float = 0.3    # peak amplitude of the output (full scale = 1)


@dataclasses.dataclass(frozen=True)
class Utterance:
    """Speech at 16 kHz with its phone segmentation.

    ``audio`` starts at the onset of the first phone and ends with the last one (espeak's
    leading and trailing pauses are cut: the generator places speech itself). Segment i
    is ``phones[i]`` over samples ``[starts[i], ends[i])``; segments tile the audio.
    """
    text: str
    voice: Voice
    audio: np.ndarray        # float32 [N]
    phones: tuple[str, ...]  # ARPAbet names (PHONES), P of them
    starts: np.ndarray       # int64 [P]
    ends: np.ndarray         # int64 [P]
    mnemonics: tuple[str, ...]  # espeak's own names, for debugging the mapping

    @property
    def seconds(self) -> float:
        return len(self.audio) / contract.AUDIO_SR


def arpabet_of(mnemonic: str) -> str:
    """ARPAbet name (a member of ``PHONES``) of one espeak-ng phoneme mnemonic.

    Pauses (``_``, ``_:``, ``_!`` ...) are ``SIL``. Stress/length marks and allophone
    suffixes are removed the way ``alphabet.phone_to_viseme`` does; raises KeyError for a
    mnemonic the shared table does not know (never guesses a class)."""
    raw = mnemonic.strip()
    if not raw or raw.startswith("_"):
        return SILENCE
    table = alphabet._ESPEAK_TO_ARPABET   # noqa: SLF001 - the shared table, not a copy
    bare = re.sub(r"[ˈˌ',%=]", "", raw)
    base = re.sub(r"(?<=.)[0-9#]+$", "", bare)
    for candidate in (raw, bare, bare + ":", base, base + ":"):
        if candidate in table:
            return table[candidate]
    raise KeyError(f"espeak-ng phoneme {mnemonic!r} has no ARPAbet entry in "
                   "avdetect.teachers.alphabet")


# --------------------------------------------------------------------------------------
# ctypes binding


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p),
                ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    # espeak_EVENT of speak_lib.h (API revision 12)
    _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint),
                ("text_position", ctypes.c_int), ("length", ctypes.c_int),
                ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                ("user_data", ctypes.c_void_p), ("id", _EventId)]


_Callback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                             ctypes.POINTER(_Event))


class _Engine:
    """The process's espeak-ng, initialised once. Only forked children synthesise."""

    def __init__(self):
        try:
            self.lib = ctypes.CDLL(_LIB_NAME)
        except OSError as e:
            raise TTSError(f"{_LIB_NAME} cannot be loaded ({e}); install espeak-ng "
                           "(apt-get install espeak-ng)") from e
        self.lib.espeak_Initialize.restype = ctypes.c_int
        self.lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint,
                                          ctypes.c_int, ctypes.c_uint, ctypes.c_uint,
                                          ctypes.c_void_p, ctypes.c_void_p]
        self.sample_rate = self.lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, None,
                                                      _INITIALIZE_PHONEME_EVENTS)
        if self.sample_rate <= 0:
            raise TTSError("espeak_Initialize failed (espeak-ng-data not found?)")
        self._chunks: list[np.ndarray] = []
        self._events: list[tuple[str, int]] = []
        self._callback = _Callback(self._on_audio)      # kept alive with the engine
        self.lib.espeak_SetSynthCallback(self._callback)
        # Load the English dictionary and phoneme tables now, once, rather than in every
        # forked synthesis child (selecting a voice speaks nothing: state stays pristine).
        self.lib.espeak_SetVoiceByName(b"en-us")

    def _on_audio(self, wav, num_samples, events) -> int:
        i = 0
        while events[i].type != _EVENT_LIST_TERMINATED:
            e = events[i]
            if e.type == _EVENT_PHONEME:
                self._events.append((e.id.string.decode("utf-8", "replace"), int(e.sample)))
            elif e.type in (_EVENT_END, _EVENT_MSG_TERMINATED):
                self._events.append(("_", int(e.sample)))
            i += 1
        if num_samples > 0 and wav:
            self._chunks.append(np.ctypeslib.as_array(wav, (num_samples,)).copy())
        return 0

    def synth_raw(self, text: str, voice: Voice) -> tuple[np.ndarray, list[tuple[str, int]]]:
        """int16 samples at ``sample_rate`` and (mnemonic, start sample) events."""
        self._chunks, self._events = [], []
        if self.lib.espeak_SetVoiceByName(voice.name.encode()) != 0:
            raise TTSError(f"espeak-ng has no voice {voice.name!r}")
        for param, value in ((_PARAM_RATE, voice.rate), (_PARAM_PITCH, voice.pitch),
                             (_PARAM_RANGE, voice.range), (_PARAM_VOLUME, 100)):
            self.lib.espeak_SetParameter(param, int(value), 0)
        data = text.encode("utf-8") + b"\0"
        rc = self.lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8,
                                   None, None)
        if rc != 0:
            raise TTSError(f"espeak_Synth failed with code {rc} for {text!r}")
        audio = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
        return audio, list(self._events)


def _read_exactly(stream, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        chunk = stream.read(n - len(out))
        if not chunk:
            break
        out += chunk
    return bytes(out)


def _send(stream, obj) -> None:
    payload = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(struct.pack("<Q", len(payload)) + payload)
    stream.flush()


def _receive(stream):
    head = _read_exactly(stream, 8)
    if len(head) < 8:
        return None
    return pickle.loads(_read_exactly(stream, struct.unpack("<Q", head)[0]))


def serve() -> None:
    """The synthesis server (run in its own small process, see ``synth_isolated``):
    initialise espeak-ng once, then for every request (text, voice) on stdin fork a child
    that synthesises from the pristine engine and hands back (samples, events, rate);
    relay that to stdout. Exits when stdin closes."""
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    try:
        engine = _Engine()
    except TTSError as e:
        engine, startup_error = None, str(e)
    while True:
        request = _receive(stdin)
        if request is None:
            return
        if engine is None:
            _send(stdout, ("error", startup_error))
            continue
        text, voice = request
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:                                  # child: synthesise, send, exit
            code = 0
            try:
                os.close(read_fd)
                with os.fdopen(write_fd, "wb") as out:
                    try:
                        result = ("ok", (*engine.synth_raw(text, voice), engine.sample_rate))
                    except Exception as e:            # reported, not a silent death
                        result = ("error", f"{type(e).__name__}: {e}")
                    _send(out, result)
            except BaseException:
                code = 1
            finally:
                os._exit(code)
        os.close(write_fd)
        with os.fdopen(read_fd, "rb") as inp:
            reply = _receive(inp)
        os.waitpid(pid, 0)
        _send(stdout, reply if reply is not None else
              ("error", f"espeak-ng synthesis process died on {text!r}"))


class _Client:
    """This process's connection to its synthesis server (started on first use)."""

    def __init__(self):
        repo = str(pathlib.Path(__file__).resolve().parents[2])
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (repo, env.get("PYTHONPATH")) if p)
        self.pid = os.getpid()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from datasets.synthetic_av.tts import serve; serve()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)

    def request(self, text: str, voice: Voice):
        try:
            _send(self.proc.stdin, (text, voice))
            reply = _receive(self.proc.stdout)
        except (BrokenPipeError, OSError) as e:
            raise TTSError(f"the espeak-ng server stopped: {e}") from e
        if reply is None:
            raise TTSError(f"the espeak-ng server exited (code {self.proc.poll()})")
        return reply

    def close(self) -> None:
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=5)
        except Exception:      # closing at exit: nothing left to report to
            self.proc.kill()


_client: _Client | None = None


def _get_client() -> _Client:
    global _client
    # A forked process (e.g. a multiprocessing worker) must not share its parent's pipes.
    if _client is None or _client.pid != os.getpid() or _client.proc.poll() is not None:
        _client = _Client()
        atexit.register(_client.close)
    return _client


def synth_isolated(text: str, voice: Voice) -> tuple[np.ndarray, list[tuple[str, int]], int]:
    """(int16 samples, (mnemonic, start sample) events, sample rate) of ``text``.

    Synthesis runs in a process forked from a server whose espeak-ng was initialised but
    never used, so the result depends only on (text, voice) (module docstring). The
    server is a separate small process rather than a fork of the caller: forking a large
    (possibly multi-threaded) caller per utterance would be slow and unsafe."""
    kind, result = _get_client().request(text, voice)
    if kind != "ok":
        raise TTSError(result)
    audio, events, rate = result
    return audio, events, rate


def _resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    import scipy.signal   # here, not at module level: keeps the synthesis server light

    g = gcd(sr_in, sr_out)
    return scipy.signal.resample_poly(x, sr_out // g, sr_in // g).astype(np.float32)


def synthesize(text: str, voice: Voice) -> Utterance:
    """Speak ``text`` with ``voice``: 16 kHz speech cut to its phones, peak-normalised to
    ``voice.gain``, with the phone segmentation (see ``Utterance``)."""
    raw, events, sr_in = synth_isolated(text, voice)
    if len(raw) == 0 or not events:
        raise TTSError(f"espeak-ng produced no speech for {text!r} with {voice.name}")
    # Segment boundaries in input samples: each phoneme event starts a segment that runs
    # to the next event (or the end of the audio). Events can repeat a position.
    names = [n for n, _ in events]
    pos = np.maximum.accumulate(np.clip([p for _, p in events], 0, len(raw)))
    bounds = np.append(pos, len(raw))
    phones = [arpabet_of(n) for n in names]
    keep = [i for i in range(len(names)) if bounds[i + 1] > bounds[i]]
    speech = [i for i in keep if phones[i] != SILENCE]
    if not speech:
        raise TTSError(f"espeak-ng produced no phones for {text!r}")
    first, last = speech[0], speech[-1]
    seg = [i for i in keep if first <= i <= last]
    t0, t1 = int(bounds[first]), int(bounds[last + 1])

    sr = contract.AUDIO_SR
    audio = _resample(contract.from_int16(raw[t0:t1]), sr_in, sr)
    peak = float(np.max(np.abs(audio))) or 1.0
    audio = (audio * (voice.gain / peak)).astype(np.float32)
    scale = sr / sr_in
    starts = np.round((bounds[seg] - t0) * scale).astype(np.int64)
    ends = np.round((bounds[[i + 1 for i in seg]] - t0) * scale).astype(np.int64)
    ends[-1] = len(audio)
    starts = np.minimum(starts, len(audio))
    ends = np.minimum(ends, len(audio))
    return Utterance(text=text, voice=voice, audio=audio, phones=tuple(phones[i] for i in seg),
                     starts=starts, ends=ends, mnemonics=tuple(names[i] for i in seg))
