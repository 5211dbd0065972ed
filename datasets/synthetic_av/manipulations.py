"""Render one clip of a plan: frames, audio and per-frame ground truth, for any method.

A clip is built as its source recording would be (the identity speaking the take's text
with the take's head motion, blinks, noise and sensor noise), then the method's audio
operation and video operation (``methods.py``) replace what they claim to replace and
nothing else:

* ``lipsync`` (Wav2Lip-like): the lower face is re-rendered with the mouth driven by the
  new audio's visemes, then pasted back blurred (rendered at half resolution, as
  Wav2Lip's 96 px face) with a slight colour offset and a narrow feather, i.e. a visible
  seam around a rectangle.
* ``faceswap``: the donor identity's face, animated with the *source* recording's mouth
  track (the lips follow the original audio), is aligned onto the head by a similarity
  transform on eyes and mouth, resampled at lower resolution, colour-matched only part
  of the way and blended inside a feathered ellipse (colour and boundary artefacts).
* ``talkinghead`` (MakeItTalk / Audio2Head-like): the mouth opening follows the audio
  energy envelope only (``visemes.envelope_articulation``): synced, but every sound gets
  the same neutral lip shape; head motion is a third as large and slower, blinks are
  rare, and the face is smoothed.
* ``voiceclone``: another identity's voice says other words (the lips no longer match).
* ``voiceconvert``: the same words on the same phone timing in another voice, through a
  mel vocoder (``audio_fx.convert_voice``).
* ``desync``: the original speech shifted by ``desync_ms``.

An original video is rendered bit-identically in every clip derived from the same take
(same frames for real, voiceclone, voiceconvert, desync), and original audio is
sample-identical (so its AAC stream is byte-identical, e.g. in a faceswap).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import cv2
import numpy as np

from avdetect import contract

from datasets.synthetic_av import audio_fx, render, visemes
from datasets.synthetic_av.faces import FaceGeometry, IdentityImage, Still, identity_image
from datasets.synthetic_av.methods import METHODS
from datasets.synthetic_av.plan import ClipSpec
from datasets.synthetic_av.tts import Utterance, synthesize

TALKINGHEAD_MOTION = 0.35      # head-motion amplitude of talking heads (1 = real)
LIPSYNC_RESOLUTION = 0.5       # the re-rendered lower face is made at this scale
FACESWAP_RESOLUTION = 0.6
FACESWAP_COLOR_MATCH = 0.6     # fraction of the colour difference the swap corrects


@dataclasses.dataclass
class ClipOutput:
    frames: np.ndarray             # uint8 [T, S, S, 3]
    audio: np.ndarray              # float32 [T * SAMPLES_PER_FRAME]
    truth: dict[str, np.ndarray]   # the per-clip ground truth (.npz)
    transcript: str                # words heard
    video_transcript: str          # words the mouth was driven by ('' for talking heads)
    voice: str                     # espeak voice heard


@dataclasses.dataclass(frozen=True)
class _Audio:
    speech: np.ndarray                      # float32 [N], no noise
    placed: visemes.Placed                  # what is heard, on the clip timeline
    text: str
    voice: str


def _audio_op(spec: ClipSpec, u1: Utterance, num_samples: int) -> _Audio:
    """The clip's speech track for the method's audio operation."""
    op = METHODS[spec.method].audio_op
    sr = contract.AUDIO_SR
    lead = int(round(spec.take.lead * sr))
    ident = spec.identity
    if op == "original":
        placed = visemes.Placed(u1, lead)
    elif op == "desync":
        placed = visemes.Placed(u1, lead + spec.desync_ms * sr // 1000)
    elif op in ("other_take", "voiceclone"):
        speaker = spec.voice_identity if op == "voiceclone" else ident
        u = synthesize(spec.other_text, speaker.voice)
        placed = visemes.Placed(u, int(round(spec.other_lead * sr)))
    elif op == "voiceconvert":
        target = synthesize(u1.text, spec.voice_identity.voice)
        converted = audio_fx.convert_voice(u1, target, spec.seed)
        u = dataclasses.replace(u1, audio=converted, voice=target.voice)
        placed = visemes.Placed(u, lead)   # same phones, same timing
    else:
        raise ValueError(f"unknown audio operation {op!r}")
    speech = audio_fx.place(placed.utterance.audio, placed.offset, num_samples)
    return _Audio(speech=speech, placed=placed, text=placed.utterance.text,
                  voice=placed.utterance.voice.name)


def _swap_transform(donor: FaceGeometry, target: FaceGeometry) -> np.ndarray:
    """Least-squares similarity (2x3; Umeyama's closed form) taking the donor's eyes and
    mouth onto the target's."""
    src = np.array([*donor.eyes, donor.mouth], np.float64)                # [3, 2]
    dst = np.array([*target.eyes, target.mouth], np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s0, d0 = src - mu_s, dst - mu_d
    u, sig, vt = np.linalg.svd(d0.T @ s0 / len(src))
    fix = np.diag([1.0, np.sign(np.linalg.det(u @ vt))])                  # no reflection
    rot = u @ fix @ vt
    scale = float(np.trace(np.diag(sig) @ fix) / (s0 ** 2).sum(1).mean())
    return np.hstack([scale * rot, (mu_d - scale * rot @ mu_s)[:, None]])


def _ellipse_mask(shape: tuple[int, int], cx: float, cy: float, ax: float, ay: float,
                  feather: float) -> np.ndarray:
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    d = (np.sqrt(((xx - cx) / ax) ** 2 + ((yy - cy) / ay) ** 2) - 1.0) * min(ax, ay)
    return np.clip(0.5 - d / feather, 0.0, 1.0)[..., None]


def _rect_mask(shape: tuple[int, int], x0: float, y0: float, x1: float, y1: float,
               feather: float) -> np.ndarray:
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    inside = np.minimum.reduce([xx - x0, x1 - xx, yy - y0, y1 - yy])
    return np.clip(0.5 + inside / feather, 0.0, 1.0)[..., None]


def _face_mask(g: FaceGeometry, shape: tuple[int, int], feather: float) -> np.ndarray:
    """Inner face (brows to chin) of a geometry, as a soft ellipse."""
    (lx, ly), (rx, ry) = g.eyes
    eye_y = 0.5 * (ly + ry)
    cx = 0.5 * (0.5 * (lx + rx) + g.mouth[0])
    cy = 0.5 * (eye_y + g.mouth[1]) + 0.02 * g.size
    return _ellipse_mask(shape, cx, cy, 0.31 * g.size, 0.44 * g.size, feather)


def _low_res(img: np.ndarray, scale: float) -> np.ndarray:
    h, w = img.shape[:2]
    small = cv2.resize(img, (max(1, int(w * scale)), max(1, int(h * scale))),
                       interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def _color_transfer(donor: IdentityImage, target: IdentityImage, m: np.ndarray,
                    mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel gain and offset moving the warped donor face part of the way to the
    target face's colour statistics (an imperfect colour match)."""
    h, w = target.image.shape[:2]
    warped = cv2.warpAffine(donor.image, m, (w, h), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_REFLECT).astype(np.float32)
    sel = mask[..., 0] > 0.9
    mu_d, sd_d = warped[sel].mean(0), warped[sel].std(0) + 1e-3
    tgt = target.image.astype(np.float32)
    mu_t, sd_t = tgt[sel].mean(0), tgt[sel].std(0) + 1e-3
    a = FACESWAP_COLOR_MATCH
    mu, sd = mu_d + a * (mu_t - mu_d), sd_d + a * (sd_t - sd_d)
    gain = sd / sd_d
    return gain.astype(np.float32), (mu - gain * mu_d).astype(np.float32)


def render_clip(spec: ClipSpec, stills: Mapping[str, Still], size: int,
                num_frames: int) -> ClipOutput:
    """Frames, audio and ground truth of ``spec`` (see the module docstring)."""
    method = METHODS[spec.method]
    t_frames = num_frames
    n_samples = t_frames * contract.SAMPLES_PER_FRAME
    ident = spec.identity

    # The source recording: every draw comes from the take's own seed, in a fixed order.
    take_rng = np.random.default_rng(spec.take.seed)
    motion = render.head_motion(take_rng, t_frames, size)
    blinks = render.blink_track(take_rng, t_frames)
    noise = audio_fx.noise_floor(take_rng, n_samples)
    sensor_seed = int(take_rng.integers(2 ** 31))
    rng = np.random.default_rng(spec.seed)         # the manipulation's own draws

    u1 = synthesize(spec.take.text, ident.voice)
    original = visemes.Placed(u1, int(round(spec.take.lead * contract.AUDIO_SR)))
    aud = _audio_op(spec, u1, n_samples)
    audio = (noise + aud.speech).astype(np.float32)

    # What drives the visible mouth.
    video_placed: visemes.Placed | None = original
    if method.video_op == "lipsync":
        video_placed = aud.placed
    if method.video_op == "talkinghead":
        video_placed = None
        drive = visemes.envelope_articulation(audio, t_frames).scaled(ident.articulation)
        motion = render.head_motion(rng, t_frames, size, amplitude=TALKINGHEAD_MOTION,
                                    max_hz=0.3)
        blinks = render.blink_track(rng, t_frames, interval_s=(5.0, 10.0))
    else:
        drive = visemes.articulation(video_placed, t_frames).scaled(ident.articulation)
    if method.video_op == "lipsync":   # the recording's own mouth, outside the paste
        original_drive = visemes.articulation(original, t_frames).scaled(ident.articulation)

    base = identity_image(stills[ident.still], ident.appearance, size)
    geometry = base.geometry          # of the face that is shown (the donor's after a swap)
    shape = (size, size)
    # Head motion turns about the head's face centre, whatever face is pasted on it.
    center = (geometry.box[0] + geometry.box[2] / 2, geometry.box[1] + geometry.box[3] / 2)
    # Manipulation set-up (per clip, not per frame).
    if method.video_op == "faceswap":
        donor = identity_image(stills[spec.donor.still], spec.donor.appearance, size)
        swap_m = _swap_transform(donor.geometry, geometry)
        swap_mask = _face_mask(geometry, shape, feather=0.06 * geometry.size)
        gain, offset = _color_transfer(donor, base, swap_m, swap_mask)
        geometry = donor.geometry.transformed(swap_m)   # the visible face is the donor's
    elif method.video_op == "lipsync":
        x, y, w, h = geometry.box
        paste_mask = _rect_mask(shape, x + 0.15 * w, geometry.mouth[1] - 0.2 * w,
                                x + 0.85 * w, y + 1.06 * h, feather=1.5)
        tint = rng.uniform(0.96, 1.04, size=3).astype(np.float32)
    elif method.video_op == "talkinghead":
        smooth_mask = _face_mask(geometry, shape, feather=0.1 * geometry.size)

    sensor_rng = np.random.default_rng(sensor_seed)
    frames = np.empty((t_frames, size, size, 3), np.uint8)
    mouth_center = np.zeros((t_frames, 2), np.float32)
    mouth_boxes = np.zeros((t_frames, 4), np.float32)
    face_boxes = np.zeros((t_frames, 4), np.float32)
    mbox = render.mouth_box(geometry)
    for t in range(t_frames):
        if method.video_op == "lipsync":
            own = render.mouth_state(original_drive.open[t], original_drive.width[t],
                                     original_drive.round[t], base.geometry)
            img = render.render_face(base, own, float(blinks[t]))
            new = render.mouth_state(drive.open[t], drive.width[t], drive.round[t],
                                     base.geometry)
            lower = _low_res(render.render_face(base, new, float(blinks[t])),
                             LIPSYNC_RESOLUTION).astype(np.float32) * tint
            img = np.clip(img * (1 - paste_mask) + lower * paste_mask + 0.5, 0, 255
                          ).astype(np.uint8)
        elif method.video_op == "faceswap":
            state = render.mouth_state(drive.open[t], drive.width[t], drive.round[t],
                                       base.geometry)
            img = render.render_face(base, state, float(blinks[t]))
            d_state = render.mouth_state(drive.open[t], drive.width[t], drive.round[t],
                                         donor.geometry)
            face = render.render_face(donor, d_state, float(blinks[t]))
            face = cv2.warpAffine(face, swap_m, shape, flags=cv2.INTER_LINEAR,
                                  borderMode=cv2.BORDER_REFLECT)
            face = _low_res(face, FACESWAP_RESOLUTION).astype(np.float32) * gain + offset
            img = np.clip(img * (1 - swap_mask) + face * swap_mask + 0.5, 0, 255
                          ).astype(np.uint8)
        else:
            state = render.mouth_state(drive.open[t], drive.width[t], drive.round[t],
                                       base.geometry)
            img = render.render_face(base, state, float(blinks[t]))
            if method.video_op == "talkinghead":
                soft = cv2.GaussianBlur(img, (0, 0), 1.0).astype(np.float32)
                img = np.clip(img * (1 - smooth_mask) + soft * smooth_mask + 0.5, 0, 255
                              ).astype(np.uint8)
        m = motion.matrix(t, center)
        frames[t] = render.sensor_noise(render.apply_motion(img, m), sensor_rng)
        scale = float(motion.scale[t])
        mouth_center[t] = render.transform_points(m, np.array(geometry.mouth))
        mc = render.transform_points(m, np.array([mbox[0] + mbox[2] / 2, mbox[1] + mbox[3] / 2]))
        mouth_boxes[t] = (mc[0] - scale * mbox[2] / 2, mc[1] - scale * mbox[3] / 2,
                          scale * mbox[2], scale * mbox[3])
        fx, fy, fw, fh = geometry.box
        fc = render.transform_points(m, np.array([fx + fw / 2, fy + fh / 2]))
        face_boxes[t] = (fc[0] - scale * fw / 2, fc[1] - scale * fh / 2, scale * fw, scale * fh)

    phone = visemes.phone_track(aud.placed, t_frames)
    if video_placed is None:
        video_phone = np.full(t_frames, -1, np.int16)
    else:
        video_phone = visemes.phone_track(video_placed, t_frames)
    truth = {
        "phone": phone, "viseme": visemes.viseme_track(phone),
        "video_phone": video_phone, "video_viseme": visemes.viseme_track(video_phone),
        "mouth_open": drive.open, "mouth_width": drive.width, "mouth_round": drive.round,
        "blink": blinks.astype(np.float32),
        "video_manipulated": np.full(t_frames, method.video_fake),
        "audio_manipulated": np.full(t_frames, method.audio_fake),
        "region": np.array(method.region),
        "mouth_center": mouth_center, "mouth_box": mouth_boxes, "face_box": face_boxes,
        "speech_offset": np.array(aud.placed.offset, np.int64),
        "video_speech_offset": np.array(
            video_placed.offset if video_placed is not None else original.offset, np.int64),
    }
    return ClipOutput(frames=frames, audio=audio, truth=truth, transcript=aud.text,
                      video_transcript=video_placed.utterance.text if video_placed else "",
                      voice=aud.voice)
