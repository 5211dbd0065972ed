"""Sentences for the synthetic speakers: drawn from a fixed word list by a seeded RNG.

The words are common English words chosen to cover every viseme class (bilabial
closures, rounded and spread vowels, labiodentals, ...) often enough that each 3 s clip
shows a varied mouth. Sentences follow a few simple templates so that espeak-ng gives
them natural phrase prosody; their meaning does not matter.
"""

from __future__ import annotations

import numpy as np

ADJECTIVES = (
    "big", "small", "happy", "busy", "quiet", "broken", "yellow", "purple", "blue", "warm",
    "cold", "bright", "old", "young", "smooth", "rough", "heavy", "modern", "famous",
    "lovely", "open", "proud", "rapid", "shiny", "tiny", "wooden", "golden", "fresh",
    "mobile", "useful", "friendly", "careful", "simple", "soft", "deep", "early", "local",
)
NOUNS = (
    "boat", "house", "window", "market", "teacher", "doctor", "mother", "farmer", "river",
    "garden", "mountain", "picture", "computer", "letter", "morning", "bottle",
    "pocket", "school", "member", "office", "village", "bridge", "forest", "museum",
    "problem", "number", "voice", "table", "paper", "music", "player", "engine", "island",
    "bank", "baby", "movie", "person", "rabbit", "wolf", "moon", "food", "ocean", "photo",
    "judge", "church", "shoe", "queen", "nurse", "pilot", "soldier", "student", "apple",
)
VERBS = (
    "moved", "found", "bought", "played", "opened", "followed", "showed", "painted",
    "watched", "pushed", "pulled", "carried", "wanted", "visited", "measured", "judged",
    "borrowed", "fixed", "washed", "threw", "brought", "believed", "remembered", "chose",
    "improved", "described", "reached", "loved", "viewed", "joined", "touched", "mapped",
)
PREPOSITIONS = ("over", "near", "behind", "beyond", "under", "through", "with", "from",
                "above", "below", "around", "toward")
ADVERBS = ("slowly", "quickly", "often", "really", "maybe", "very", "almost", "always",
           "happily", "openly", "early", "today", "before", "soon")
NAMES = ("Bob", "Mary", "Paul", "Judy", "Sophie", "Peter", "Martha", "Victor", "Owen",
         "Chloe", "Uma", "Ruth", "Theo", "Maya", "Yusuf", "Zoe")

_TEMPLATES = (
    ("the", "A", "N", "V", "the", "N"),
    ("N!", "V", "a", "A", "N", "P", "the", "N"),
    ("my", "N", "D", "V", "the", "A", "N"),
    ("the", "N", "P", "the", "N", "V", "D"),
    ("we", "V", "your", "A", "N", "P", "the", "A", "N"),
    ("D", "the", "A", "N", "V", "our", "N"),
    ("N!", "and", "N!", "V", "the", "N", "P", "the", "N"),
)
_SLOTS = {"A": ADJECTIVES, "N": NOUNS, "V": VERBS, "P": PREPOSITIONS, "D": ADVERBS,
          "N!": NAMES}


def sentence(rng: np.random.Generator) -> str:
    """One sentence drawn from the templates (e.g. 'the purple boat moved the river')."""
    template = _TEMPLATES[int(rng.integers(len(_TEMPLATES)))]
    words = [str(rng.choice(_SLOTS[s])) if s in _SLOTS else s for s in template]
    return " ".join(words)


def text_for_duration(rng: np.random.Generator, seconds: float, words_per_minute: float
                      ) -> str:
    """About ``seconds`` of speech at ``words_per_minute`` (espeak-ng's rate parameter
    counts words per minute): sentences joined with commas, the last one cut short."""
    target_words = max(3, int(round(seconds * words_per_minute / 60.0)))
    words: list[str] = []
    while len(words) < target_words:
        if words:
            words[-1] += ","
        words.extend(sentence(rng).split())
    return " ".join(words[:target_words]).rstrip(",")
