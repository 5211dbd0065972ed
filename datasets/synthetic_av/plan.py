"""Planning a benchmark: identities, splits, source recordings and one spec per clip.

Everything random is drawn here, in one process, from ``numpy.random.default_rng(seed)``;
a clip spec then holds every choice its worker needs (texts, voices, leads, per-clip
seeds), so the output does not depend on how many workers render it or in which order.

Identities and splits
    An identity is (base still, appearance, voice) (``faces.Identity``). Identities are
    split train/val/test (about 70/15/15, at least 2 each). The base stills are split
    too where there are enough of them: the test identities are built on ``TEST_STILLS``
    stills that no train or val identity uses, so a test face is never a re-graded
    training face; train and val share the remaining stills (val is for model
    selection, identity-disjoint but not still-disjoint). Voices come from espeak-ng
    variants of the still's gender, cycled so neighbours differ, with per-identity
    pitch, rate, pitch range and loudness.

Clips
    About ``real_fraction`` of the clips are real recordings ("takes") spread evenly over
    the identities; every fake is derived from one of them (``source_clip_id``), as in
    FakeAVCeleb, and inherits its split. Fakes are spread over the methods by
    ``method_weights`` (equal by default). Donor faces (faceswap) and other voices
    (voiceclone, voiceconvert) come from identities of the same split, donors from a
    different base still where the split has one, so splits stay identity-disjoint.

Timing
    Speech starts after a lead drawn uniformly from ``LEAD_RANGE`` for every clip, real
    or fake; ``desync`` shifts the audio by 80-400 ms in a direction that keeps its lead
    inside the same range (the lag magnitude is capped where neither direction fits),
    so the amount of leading silence says nothing about the label.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np

from datasets.synthetic_av import text as text_lib
from datasets.synthetic_av.faces import Identity, random_appearance
from datasets.synthetic_av.methods import FAKE_METHODS, METHODS
from datasets.synthetic_av.tts import Voice

SPLITS = ("train", "val", "test")
SPLIT_FRACTIONS = {"train": 0.70, "val": 0.15, "test": 0.15}
TEST_STILLS = 2
LEAD_RANGE = (0.10, 0.70)          # seconds of silence before speech starts
DESYNC_MS = (80, 400)
CRF_RANGE = (23, 28)               # H.264 quality: compression noise varies per recording
MIN_IDENTITIES = 6

# espeak-ng en-us variants (speech-like ones: no whisper, robots or klatt formant voices).
MALE_VOICES = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "adam", "david", "ed", "john",
               "paul", "rob", "benjamin", "caleb", "max")
FEMALE_VOICES = ("f1", "f2", "f3", "f4", "f5", "linda", "belinda", "anika", "steph",
                 "Andrea", "Annie", "Alicia")


@dataclasses.dataclass(frozen=True)
class Take:
    """A real recording: an identity saying ``text``, speech starting at ``lead`` seconds.
    ``seed`` drives everything else about the recording (head motion, blinks, noise)."""
    identity: str
    text: str
    lead: float
    seed: int
    crf: int


@dataclasses.dataclass(frozen=True)
class ClipSpec:
    """Everything needed to render one clip."""
    clip_id: str
    index: int
    method: str
    split: str
    identity: Identity             # whose recording (head, background, folder)
    take: Take                     # the source recording
    source_clip_id: str            # the real clip the fake is derived from ('' for reals)
    donor: Identity | None         # faceswap: whose face is pasted in
    voice_identity: Identity | None  # voiceclone / voiceconvert: whose voice is heard
    other_text: str                # lipsync / voiceclone: the other words
    other_lead: float              # lead of the other words
    desync_ms: int                 # desync: audio lag (+ = audio later than video)
    seed: int                      # randomness of the manipulation itself

    @property
    def face_identity(self) -> Identity:
        return self.donor or self.identity

    @property
    def audio_identity(self) -> Identity:
        return self.voice_identity or self.identity


def _voice(rng: np.random.Generator, variant: str) -> Voice:
    return Voice(name=f"en-us+{variant}", pitch=int(rng.integers(35, 66)),
                 rate=int(rng.integers(150, 186)), range=int(rng.integers(35, 71)),
                 gain=float(rng.uniform(0.22, 0.40)))


def _split_counts(n: int) -> dict[str, int]:
    test = max(2, int(round(SPLIT_FRACTIONS["test"] * n)))
    val = max(2, int(round(SPLIT_FRACTIONS["val"] * n)))
    return {"train": n - test - val, "val": val, "test": test}


def plan_identities(rng: np.random.Generator, num_identities: int,
                    stills: Sequence[tuple[str, str]]) -> list[Identity]:
    """``num_identities`` identities over ``stills`` ((name, gender) pairs), split as the
    module docstring says."""
    if num_identities < MIN_IDENTITIES:
        raise ValueError(f"need at least {MIN_IDENTITIES} identities, got {num_identities}")
    order = [stills[i] for i in rng.permutation(len(stills))]
    # Still-disjoint test set only if train/val keep at least two stills of their own.
    n_test_stills = TEST_STILLS if len(order) - TEST_STILLS >= 2 else 0
    pools = {"test": order[:n_test_stills] or order, "train": order[n_test_stills:],
             "val": order[n_test_stills:]}
    counts = _split_counts(num_identities)
    voice_pools = {"m": list(rng.permutation(MALE_VOICES)),
                   "f": list(rng.permutation(FEMALE_VOICES))}
    voice_next = {"m": 0, "f": 0}
    identities: list[Identity] = []
    for split in SPLITS:
        pool = pools[split]
        offset = int(rng.integers(len(pool)))
        for k in range(counts[split]):
            still, gender = pool[(offset + k) % len(pool)]
            variants = voice_pools[gender]
            variant = variants[voice_next[gender] % len(variants)]
            voice_next[gender] += 1
            identities.append(Identity(
                id=f"id{len(identities):05d}", still=still, gender=gender,
                appearance=random_appearance(rng), voice=_voice(rng, str(variant)),
                articulation=float(rng.uniform(0.8, 1.15)), split=split))
    return identities


def _take(rng: np.random.Generator, identity: Identity, seconds: float) -> Take:
    lead = float(rng.uniform(*LEAD_RANGE))
    speech_s = seconds - lead - float(rng.uniform(0.05, 0.4))
    return Take(identity=identity.id,
                text=text_lib.text_for_duration(rng, speech_s, identity.voice.rate),
                lead=round(lead, 4), seed=int(rng.integers(2 ** 31)),
                crf=int(rng.integers(CRF_RANGE[0], CRF_RANGE[1] + 1)))


def _allocate(total: int, weights: Mapping[str, float]) -> dict[str, int]:
    """Largest-remainder allocation of ``total`` clips to methods by weight."""
    names = [m for m in FAKE_METHODS if weights.get(m, 0) > 0]
    w = np.array([weights[m] for m in names], float)
    exact = total * w / w.sum()
    counts = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - counts), kind="stable")[:total - counts.sum()]:
        counts[i] += 1
    return dict(zip(names, counts.tolist()))


def _desync_ms(rng: np.random.Generator, lead: float) -> int:
    room_later, room_earlier = LEAD_RANGE[1] - lead, lead - LEAD_RANGE[0]
    hi = min(DESYNC_MS[1], 1000 * max(room_later, room_earlier))
    magnitude = rng.uniform(DESYNC_MS[0], max(hi, DESYNC_MS[0]))
    signs = [s for s, room in ((1, room_later), (-1, room_earlier))
             if magnitude <= 1000 * room] or [1 if room_later >= room_earlier else -1]
    return int(round(signs[int(rng.integers(len(signs)))] * magnitude))


def plan_clips(*, num_clips: int, seed: int, seconds: float,
               stills: Sequence[tuple[str, str]], real_fraction: float = 0.5,
               method_weights: Mapping[str, float] | None = None,
               reals_per_identity: float = 3.0) -> tuple[list[Identity], list[ClipSpec]]:
    """Identities and clip specs of a benchmark (see the module docstring). Pure: the
    same arguments give the same plan."""
    weights = dict(method_weights) if method_weights else {m: 1.0 for m in FAKE_METHODS}
    unknown = set(weights) - set(FAKE_METHODS)
    if unknown:
        raise ValueError(f"unknown methods {sorted(unknown)}; known: {list(FAKE_METHODS)}")
    if not 0 < real_fraction <= 1:
        raise ValueError(f"real_fraction must be in (0, 1], got {real_fraction}")
    rng = np.random.default_rng(seed)
    num_real = max(1, int(round(num_clips * real_fraction)))
    num_fake = num_clips - num_real
    num_ids = max(MIN_IDENTITIES, int(np.ceil(num_real / reals_per_identity)))
    if num_real < num_ids:
        raise ValueError(f"{num_clips} clips give {num_real} real clips, fewer than the "
                         f"{num_ids} identities a split-disjoint benchmark needs")
    identities = plan_identities(rng, num_ids, stills)
    by_id = {i.id: i for i in identities}
    by_split = {s: [i for i in identities if i.split == s] for s in SPLITS}

    specs: list[ClipSpec] = []
    for k in range(num_real):
        ident = identities[k % num_ids]
        take = _take(rng, ident, seconds)
        specs.append(ClipSpec(clip_id=f"{k:05d}", index=k, method="real", split=ident.split,
                              identity=ident, take=take, source_clip_id="", donor=None,
                              voice_identity=None, other_text="", other_lead=0.0,
                              desync_ms=0, seed=take.seed))
    reals = list(specs)

    methods = [m for m, n in _allocate(num_fake, weights).items() for _ in range(n)]
    methods = [methods[i] for i in rng.permutation(len(methods))]
    source_order = list(rng.permutation(len(reals)))
    for j, name in enumerate(methods):
        method = METHODS[name]
        src = reals[source_order[j % len(reals)]]
        ident = src.identity
        peers = [i for i in by_split[ident.split] if i.id != ident.id]
        donor = voice = None
        if method.needs_donor:
            other_still = [i for i in peers if i.still != ident.still]
            pool = other_still or peers
            donor = pool[int(rng.integers(len(pool)))]
        if method.needs_other_voice:
            voice = peers[int(rng.integers(len(peers)))]
        other_text, other_lead = "", 0.0
        if method.needs_other_text:
            speaker = voice or ident
            other_lead = round(float(rng.uniform(*LEAD_RANGE)), 4)
            other_text = text_lib.text_for_duration(
                rng, seconds - other_lead - float(rng.uniform(0.05, 0.4)), speaker.voice.rate)
        desync = _desync_ms(rng, src.take.lead) if method.audio_op == "desync" else 0
        k = num_real + j
        specs.append(ClipSpec(clip_id=f"{k:05d}", index=k, method=name, split=ident.split,
                              identity=by_id[ident.id], take=src.take,
                              source_clip_id=src.clip_id, donor=donor, voice_identity=voice,
                              other_text=other_text, other_lead=other_lead,
                              desync_ms=desync, seed=int(rng.integers(2 ** 31))))
    return identities, specs
