"""Derived clips (build-time pseudo-fakes, :mod:`avdetect.data.pseudo_fakes`): their cache
entries are made from the source clip's (and the donor's) cache entry, never from the
video: frames the derivation copies keep the source's encoded bytes, new frames are
encoded, and teacher posteriors are carried over where a stream is a plain window of the
source's. :func:`avdetect.data.clips.preprocess_all` runs them in its second pass.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Mapping

import numpy as np

from avdetect import contract
from avdetect.data import codec
from avdetect.data.cache_entry import Outcome, make_entry, pack_frames, unpack_frames
from avdetect.data.clips import ClipTask, PreprocessSpec



def derived_cache_path(cache_dir: str, task: ClipTask, spec_key: str, source_file: str,
                       donor_file: str = "") -> str:
    """Cache file of a derived task: hash of the derivation spec, the source's (and the
    donor's) cache entry names (content + parameters) and the derivation code."""
    from avdetect.data import pseudo_fakes

    blob = json.dumps({"derive": task.derive, "source": os.path.basename(source_file),
                       "donor": os.path.basename(donor_file) if donor_file else "",
                       "code": pseudo_fakes.code_hash()}, sort_keys=True, default=str)
    digest = hashlib.sha256(blob.encode()).hexdigest()
    return os.path.join(cache_dir, "derived", digest[:2], f"{digest}-{spec_key}.npz")


def _load_npz(path: str) -> dict[str, np.ndarray]:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def _is_window(index: np.ndarray) -> bool:
    """True when a frame map is a contiguous window of its source (t -> s0 + t)."""
    return bool(index.size and index[0] >= 0 and np.all(np.diff(index) == 1))


def _carry_teacher(src: Mapping[str, np.ndarray], donor: Mapping[str, np.ndarray] | None,
                   out: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], str]:
    """Teacher posteriors of a derived clip without running the teacher again: a side is
    kept where the derived stream is a contiguous window of the source's (or, for the
    audio, the donor's) stream, re-indexed to it; any other side is zeros, flagged
    absent (a frozen, blended, reversed or re-voiced stream has no posteriors)."""
    T = len(out["face_found"])
    res: dict[str, np.ndarray] = {}
    valid = {}
    for side, index_key in (("audio", "audio_src"), ("video", "face_src")):
        index = np.asarray(out[index_key])
        ok = _is_window(index) and (side != "video" or _is_window(np.asarray(out["mouth_src"])))
        origin = donor if (side == "audio" and out.get("audio_from") == "donor") else src
        flag = f"has_teacher_{side}"
        had = bool(origin[flag]) if flag in origin else bool(origin["has_teacher"])
        arr = origin[f"teacher_{side}"]
        valid[side] = ok and had
        res[f"teacher_{side}"] = (arr[index] if valid[side]
                                  else np.zeros((T,) + arr.shape[1:], arr.dtype))
        if flag in src:
            res[flag] = np.bool_(valid[side])
    res["has_teacher"] = np.bool_(valid["audio"] and valid["video"])
    kept = [s for s in ("audio", "video") if valid[s]]
    note = ("teacher posteriors carried over: " + (", ".join(kept) or "none")
            if "has_teacher" in src and (bool(src["has_teacher"]) or any(
                bool(src.get(f"has_teacher_{s}", False)) for s in ("audio", "video")))
            else "")
    return res, note


def derive_arrays(task: ClipTask, spec: PreprocessSpec, source_file: str,
                  donor_file: str = "", transcripts_dir: str = "") -> tuple[dict, list[str]]:
    """The cache arrays of a derived task: the source's entry with the derivation applied.
    Frames the derivation copies keep the source's encoded bytes (no re-encoding)."""
    from avdetect.data import pseudo_fakes as pf
    from avdetect.data.revoice import transcript_of

    d = task.derive
    kind, info = d["kind"], pf.KINDS[d["kind"]]
    src = _load_npz(source_file)
    donor = _load_npz(donor_file) if donor_file else None
    mouth_blobs = unpack_frames(src["mouth_data"], src["mouth_offsets"])
    face_blobs = unpack_frames(src["face_data"], src["face_offsets"])
    clip = {"audio": src["audio"], "logmel": src["logmel"].astype(np.float32),
            "face_found": src["face_found"], "boxes": src["boxes"]}
    if "lips" in src:
        clip["lips"] = src["lips"]
    if info.needs_mouth:
        clip["mouth"] = codec.decode_frames(list(mouth_blobs), color=False)
    if info.needs_face:
        clip["face"] = codec.decode_frames(list(face_blobs), color=True)
    transcript = (transcript_of(src["audio"], transcripts_dir) if kind == "pf_tts"
                  else "")
    out = pf.apply(kind, d["params"], clip,
                   donor_audio=None if donor is None else donor["audio"],
                   donor_lips=(donor["lips"] if donor is not None and "lips" in donor
                               and bool(donor.get("has_lips", True)) else None),
                   transcript=transcript, min_frames=int(d.get("min_frames", 1)),
                   path=task.path)
    enc = spec.encoding

    def blobs_of(name: str, source_blobs: np.ndarray, codec_name: str) -> list[bytes]:
        src_index = np.asarray(out[f"{name}_src"])
        new = np.flatnonzero(src_index < 0)
        made = (codec.encode_frames(out[name][new], codec_name, jpeg_quality=enc.jpeg_quality,
                                    png_compression=enc.png_compression) if new.size else [])
        made_at = dict(zip(new.tolist(), made))
        return [made_at[i] if s < 0 else source_blobs[s] for i, s in enumerate(src_index)]

    T = len(out["face_found"])
    mouth_data, mouth_off = pack_frames(blobs_of("mouth", mouth_blobs, enc.mouth_codec))
    face_data, face_off = pack_frames(blobs_of("face", face_blobs, enc.face_codec))
    teacher, teacher_note = _carry_teacher(src, donor, out)
    notes = []                  # kind, source and donor are in the example's attributes
    if kind == "pf_tts":
        notes.append(f"transcript: {transcript[:80]!r}")
    if teacher_note:
        notes.append(teacher_note)
    arrays = dict(src)          # every other field (params, source info) is the source's
    arrays.update(teacher)
    arrays.update({
        "mouth_data": mouth_data, "mouth_offsets": mouth_off,
        "face_data": face_data, "face_offsets": face_off,
        "logmel": np.asarray(out["logmel"], np.float16), "audio": out["audio"],
        "face_found": out["face_found"], "boxes": out["boxes"],
        **({"lips": np.asarray(out["lips"], np.float32)} if "lips" in out else {}),
        "duration_s": np.float32(T / contract.VIDEO_FPS),
        "notes_json": np.array(json.dumps(notes)),
        "audio_source": np.array(d.get("donor") or (f"tts:{d['params'].get('voice')}"
                                                    if kind == "pf_tts" else "")),
    })
    return arrays, notes


def process_derived(task: ClipTask, spec: PreprocessSpec, path: str, source_file: str,
                    donor_file: str = "", transcripts_dir: str = "") -> Outcome:
    """Make one derived clip into cache file ``path``; never raises for bad input (as
    :func:`process_clip`: a MediaError, e.g. a clip too short for the shift, becomes a
    'skipped' outcome)."""
    return make_entry(task, path, lambda: derive_arrays(task, spec, source_file, donor_file,
                                                         transcripts_dir))
