"""The shared alphabets that teacher posteriors are expressed in.

The correlation-distillation target is r_t = 1 - D(p_t, q_t): the audio-side posterior
p_t and the video-side posterior q_t must be distributions over ONE alphabet. Which
alphabet depends on the teacher:

* ``CHARS`` (K = 40), the deep_avsr character set, for the paper's ASR/VSR teacher
  networks (``deep_avsr.py``). Both networks were trained with CTC over exactly these 40
  symbols, so their outputs already share the alphabet; this is what the paper compares.
  Index order is deep_avsr's ``CHAR_TO_INDEX`` (0 = CTC blank, 1 = space, 39 = <EOS>),
  which is the row order of their ``outputConv`` weight, so it must not be re-sorted.

* ``VISEMES`` (K = 14), viseme classes, for the oracle and the forced-alignment teachers
  (``oracle.py``, ``asr_align.py``). Their audio side knows phones, but lips only show
  visemes: /p/, /b/ and /m/ look identical, so a video-side posterior over phones would
  claim distinctions nobody can see, and real clips would "disagree" on every p/b/m. Mapping
  heard phones onto the viseme classes makes a genuine clip's audio and video sides agree
  exactly, and leaves disagreement only where what is heard cannot produce what is shown.
  The classes follow the usual consonant groupings by place of articulation plus vowel
  groups by lip opening / spreading / rounding (close to MPEG-4 visemes, with the rarely
  distinguishable alveolars merged).

``phone_to_viseme`` accepts ARPAbet (CMUdict / pocketsphinx, with or without stress digits)
and espeak-ng phoneme names (its ASCII mnemonics as printed by ``espeak-ng -x`` or reported
by phoneme events, and IPA as printed by ``--ipa``).
"""

from __future__ import annotations

import re
from types import MappingProxyType
from typing import Mapping, Sequence

import numpy as np

# --- deep_avsr characters ---------------------------------------------------------------

BLANK = "<BLANK>"
EOS = "<EOS>"
# Index -> symbol, in deep_avsr's CHAR_TO_INDEX order (config.py of every deep_avsr model).
CHARS: tuple[str, ...] = (
    BLANK, " ", "E", "T", "O", "A", "I", "N", "S", "H", "R", "L", "D", "U", "Y", "W", "G",
    "C", "M", "F", "B", "P", "'", "V", "K", "J", "X", "Q", "Z", "0", "1", "9", "2", "8",
    "5", "6", "7", "3", "4", EOS,
)
CHAR_INDEX: Mapping[str, int] = MappingProxyType({c: i for i, c in enumerate(CHARS)})
NUM_CHARS = len(CHARS)

# --- viseme classes ---------------------------------------------------------------------

# name -> ARPAbet phones shown with that mouth shape (phones without stress digits).
_VISEME_PHONES: dict[str, tuple[str, ...]] = {
    "sil": ("SIL",),                     # closed, relaxed mouth: silence, pauses, noise
    "PBM": ("P", "B", "M"),              # lips pressed together
    "FV": ("F", "V"),                    # lower lip under the upper teeth
    "TH": ("TH", "DH"),                  # tongue tip between the teeth
    "TDNL": ("T", "D", "N", "L"),        # alveolar closure, lips neutral, slightly open
    "SZ": ("S", "Z"),                    # teeth nearly closed, lips spread
    "SH": ("SH", "ZH", "CH", "JH"),      # lips protruded, teeth close
    "KG": ("K", "G", "NG", "HH"),        # velar / glottal: lips follow the neighbours
    "R": ("R", "ER"),                    # slightly rounded, lips pushed forward
    "W": ("W", "UW", "UH"),              # small rounded opening
    "OW": ("OW", "OY", "AO"),            # rounded, more open
    "AA": ("AA", "AE", "AH", "AW", "AY"),  # wide open jaw
    "EH": ("EH", "EY"),                  # mid open, spread
    "IY": ("IY", "IH", "Y"),             # nearly closed, spread
}
VISEMES: tuple[str, ...] = tuple(_VISEME_PHONES)
VISEME_INDEX: Mapping[str, int] = MappingProxyType({v: i for i, v in enumerate(VISEMES)})
NUM_VISEMES = len(VISEMES)
SILENCE = "sil"

ARPABET_TO_VISEME: Mapping[str, str] = MappingProxyType(
    {p: v for v, phones in _VISEME_PHONES.items() for p in phones})

# Non-speech labels (pocketsphinx fillers, Montreal/TIMIT-style pauses) -> silence.
_SILENCE_NAMES = {"SIL", "SP", "SPN", "NSN", "+NSN+", "+SPN+", "<SIL>", "<S>", "</S>",
                  "PAU", "H#", "EPI", "_", "||", "|", ""}

# espeak-ng ASCII phoneme mnemonics (English tables, as ``espeak-ng -x`` prints them and
# phoneme events report them) -> ARPAbet. Stress and length marks are stripped first.
# NB: several mnemonics collide with ARPAbet spellings of OTHER phones ("T" is /θ/, "D"
# /ð/, "S" /ʃ/, "Z" /ʒ/, "N" /ŋ/, "V" /ʌ/), which is why callers name the scheme.
_ESPEAK_TO_ARPABET: dict[str, str] = {
    # consonants
    "p": "P", "b": "B", "t": "T", "d": "D", "k": "K", "g": "G", "f": "F", "v": "V",
    "T": "TH", "D": "DH", "s": "S", "z": "Z", "S": "SH", "Z": "ZH", "tS": "CH", "dZ": "JH",
    "h": "HH", "m": "M", "n": "N", "N": "NG", "l": "L", "r": "R", "w": "W", "j": "Y",
    "x": "HH", "C": "HH", "?": "T", "hw": "W", "t#": "T", "d#": "D", "z#": "Z", "t2": "T",
    "d2": "D", "r-": "R", "l/": "L", "n-": "N", "m-": "M", "l-": "L", "@L": "L",
    ";": "Y",       # linking glide after /i/ before a vowel ("the_old", "story_about")
    # vowels
    "@": "AH", "@2": "AH", "@5": "AH", "a#": "AH", "V": "AH", "3": "ER", "3:": "ER",
    "a": "AE", "aa": "AE", "a2": "AH", "A:": "AA", "A@": "AA", "A#": "AA", "0": "AA",
    "0#": "AA", "e": "EH", "E": "EH", "E2": "EH", "E3": "EH", "e@": "EH", "eI": "EY",
    "i": "IY", "i:": "IY", "i@": "IH", "i@3": "IH", "I": "IH", "I2": "IH", "I#": "IH",
    "O": "AO", "O:": "AO", "O@": "AO", "o@": "AO", "OI": "OY", "oU": "OW", "oU#": "OW",
    "o": "OW", "u": "UW", "u:": "UW", "u@": "UH", "U": "UH", "U@": "UH", "aI": "AY",
    "aI@": "AY", "aI3": "AY", "aU": "AW", "aU@": "AW", "IR": "ER", "VR": "ER", "3r": "ER",
}
# IPA as ``espeak-ng --ipa`` prints it (single segments and diphthongs) -> ARPAbet.
_IPA_TO_ARPABET: dict[str, str] = {
    "p": "P", "b": "B", "t": "T", "d": "D", "k": "K", "g": "G", "ɡ": "G", "f": "F",
    "v": "V", "θ": "TH", "ð": "DH", "s": "S", "z": "Z", "ʃ": "SH", "ʒ": "ZH", "tʃ": "CH",
    "dʒ": "JH", "h": "HH", "m": "M", "n": "N", "ŋ": "NG", "l": "L", "ɫ": "L", "ɹ": "R",
    "r": "R", "w": "W", "j": "Y", "x": "HH", "ç": "HH", "ɾ": "T", "ʔ": "T", "ə": "AH",
    "ɐ": "AH", "ʌ": "AH", "ɚ": "ER", "ɜ": "ER", "ɝ": "ER", "æ": "AE", "a": "AE", "ɑ": "AA",
    "ɒ": "AA", "e": "EH", "ɛ": "EH", "eɪ": "EY", "i": "IY", "ɪ": "IH", "ᵻ": "IH",
    "ɔ": "AO", "ɔɪ": "OY", "o": "OW", "oʊ": "OW", "əʊ": "OW", "u": "UW", "ʊ": "UH",
    "aɪ": "AY", "aʊ": "AW", "ɪə": "IH", "iə": "IH", "ɛə": "EH", "eə": "EH", "ʊə": "UH",
    # r-coloured vowels printed as one segment (air, ear, car, or, poor): the vowel's
    # lip shape dominates the frame.
    "ɛɹ": "EH", "ɪɹ": "IH", "ɑɹ": "AA", "ɔɹ": "AO", "oɹ": "AO", "ʊɹ": "UH", "aɪɚ": "AY",
    "aʊɚ": "AW", "əl": "L",
}
# Stress, length and (IPA) syllabicity marks: they do not change the mouth shape.
_STRESS_AND_LENGTH = re.compile("[ˈˌ'ˑ:ː,%=\u0329]")
PHONE_SCHEMES = ("arpabet", "espeak", "ipa")


def phone_to_viseme(name: str, scheme: str = "arpabet") -> str:
    """Viseme class (a member of ``VISEMES``) of one phone name.

    ``scheme`` says how ``name`` is spelled: ``"arpabet"`` (CMUdict / pocketsphinx, e.g.
    ``"AA1"``, ``"DH"``, ``"SIL"``), ``"espeak"`` (espeak-ng ASCII mnemonics, e.g.
    ``"aI@"``, ``"tS"``, ``"'eI"``, ``"_:"``) or ``"ipa"`` (``"ʃ"``, ``"ˈoʊ"``); viseme
    class names and silence/pause labels are accepted in every scheme. Raises ``KeyError``
    naming the phone when it is unknown: silently filing an unknown phone under some class
    would corrupt every posterior built on it.
    """
    if scheme not in PHONE_SCHEMES:
        raise ValueError(f"unknown phone scheme {scheme!r}; expected one of {PHONE_SCHEMES}")
    if name in VISEME_INDEX:
        return name
    raw = name.strip()
    if raw.startswith("_") or raw.upper() in _SILENCE_NAMES:
        return SILENCE
    if scheme == "arpabet":
        arpa = re.sub(r"[0-2]$", "", raw.upper())
        if arpa in ARPABET_TO_VISEME:
            return ARPABET_TO_VISEME[arpa]
    else:
        table = _ESPEAK_TO_ARPABET if scheme == "espeak" else _IPA_TO_ARPABET
        bare = _STRESS_AND_LENGTH.sub("", raw)
        # "i:" is its own mnemonic while "'eI" only carries a stress mark: try both; then
        # the base of a variant ("O2", "a#", "t#" are allophones of "O", "a", "t").
        base = re.sub(r"(?<=.)[0-9#]+$", "", bare)
        for candidate in (raw, bare, bare + ":", base, base + ":"):
            if candidate in table:
                return ARPABET_TO_VISEME[table[candidate]]
    raise KeyError(f"phone {name!r} is not a known {scheme} phone name; "
                   f"add it to avdetect.teachers.alphabet")


def guess_phone_scheme(names: Sequence[str]) -> str:
    """Which spelling (``PHONE_SCHEMES``) a whole phone inventory uses.

    ARPAbet when every non-silence name is an upper-case ARPAbet phone (stress digits
    allowed); IPA when any name holds a non-ASCII character; espeak mnemonics otherwise.
    Deciding per inventory, not per phone, is what resolves the "T" = /t/ or /θ/ clash.
    """
    speech = [n.strip() for n in names
              if not (n.strip().startswith("_") or n.strip().upper() in _SILENCE_NAMES
                      or n in VISEME_INDEX)]
    if any(not n.isascii() for n in speech):
        return "ipa"
    if all(n == n.upper() and re.sub(r"[0-2]$", "", n) in ARPABET_TO_VISEME for n in speech):
        return "arpabet"
    return "espeak"


def viseme_ids(phones: Sequence[str], scheme: str | None = None) -> np.ndarray:
    """Viseme class index (int32 [N]) of each phone name in ``phones``; ``scheme`` as in
    ``phone_to_viseme``, guessed from ``phones`` themselves when None."""
    scheme = scheme or guess_phone_scheme(phones)
    return np.asarray([VISEME_INDEX[phone_to_viseme(p, scheme)] for p in phones],
                      dtype=np.int32)


def text_to_chars(text: str) -> np.ndarray:
    """deep_avsr character indices (int32 [N]) of ``text``: upper-cased, characters
    outside the set dropped (what deep_avsr's data loaders do to LRS transcripts)."""
    return np.asarray([CHAR_INDEX[c] for c in text.upper() if c in CHAR_INDEX
                       and c not in (BLANK, EOS)], dtype=np.int32)
