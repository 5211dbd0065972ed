"""Generate the synthetic audio-visual deepfake benchmark.

    python -m datasets.synthetic_av.generate --out DIR --preset tiny --seed 0 [--workers 2]

Output (FakeAVCeleb-like)::

    DIR/meta_data.csv                     one row per clip (columns: META_COLUMNS)
    DIR/alphabet.json                     phone and viseme alphabets of the tracks
    DIR/generator.json                    the arguments, identities and stills used
    DIR/<category folder>/<method>/<identity>/<clip_id>.mp4   H.264 + AAC, 25 fps, 16 kHz
    DIR/<category folder>/<method>/<identity>/<clip_id>.npz   per-frame ground truth

Category folders are FakeAVCeleb's (``RealVideo-RealAudio``, ``RealVideo-FakeAudio``,
``FakeVideo-RealAudio``, ``FakeVideo-FakeAudio``). The same seed gives the same files
whatever the number of workers (``plan.py`` draws everything up front; ``tts.py``
makes speech synthesis independent of call order; the encoder is deterministic).

Ground truth ``<clip_id>.npz`` (T video frames):

==================  =============  =====================================================
key                 dtype / shape  meaning
==================  =============  =====================================================
phone               int16 [T]      phone heard (index into alphabet.json ``phones``)
viseme              int16 [T]      its viseme class (``visemes``; = alphabet.VISEMES)
video_phone         int16 [T]      phone the visible mouth was driven by; -1 where it
                                   follows no phone (talking heads: energy only)
video_viseme        int16 [T]      its viseme class (-1 likewise)
mouth_open          float32 [T]    rendered mouth opening in [0, 1] (jaw drop)
mouth_width         float32 [T]    rendered lip spreading in [0, 1]
mouth_round         float32 [T]    rendered lip rounding in [0, 1]
blink               float32 [T]    eyelid closure in [0, 1]
video_manipulated   bool [T]       frame's video was manipulated
audio_manipulated   bool [T]       frame's audio was manipulated
region              str            video region manipulated: none / mouth / face
mouth_center        float32 [T, 2] lip-line centre (x, y) in frame pixels
mouth_box           float32 [T, 4] (x, y, w, h) box holding the mouth opening
face_box            float32 [T, 4] (x, y, w, h) face box (Haar-box convention)
speech_offset       int64          sample where the heard utterance starts
video_speech_offset int64          sample where the utterance driving the mouth starts
==================  =============  =====================================================
"""

from __future__ import annotations

import argparse
import collections
import csv
import dataclasses
import json
import multiprocessing
import os
import pathlib
import sys
import time
from collections.abc import Mapping, Sequence

import numpy as np
from tqdm import tqdm

from avdetect import contract
from avdetect.errors import AVDetectError, ConfigError
from avdetect.media.encode import write_mp4
from avdetect.teachers import alphabet

from datasets.synthetic_av import faces, manipulations, tts
from datasets.synthetic_av.methods import CATEGORY_FOLDERS, METHODS
from datasets.synthetic_av.plan import ClipSpec, plan_clips

PRESETS: dict[str, dict] = {
    "tiny": {"num_clips": 40, "seconds": 3.0, "size": 192},
    "demo": {"num_clips": 600, "seconds": 3.0, "size": 192},
}
META_COLUMNS = ("path", "clip_id", "split", "label", "category", "method", "identity",
                "video_fake", "audio_fake", "sync_fake", "source_identity", "audio_identity",
                "desync_ms", "num_frames", "seed", "source_clip_id", "region", "base_still",
                "voice", "transcript", "video_transcript", "crf")
# 2: face stills from realtalk train-split identities (no longer from the fixture clips).
GENERATOR_VERSION = 2

# Worker state, set once per process by _init_worker (stills are large; send them once).
_STATE: dict = {}


def _init_worker(stills: Sequence[faces.Still], out_dir: str, size: int,
                 num_frames: int, single_threaded: bool = False) -> None:
    if single_threaded:
        # one worker per core: OpenCV's own thread pool would only oversubscribe
        import cv2
        cv2.setNumThreads(1)
    _STATE.update(stills={s.name: s for s in stills}, out_dir=pathlib.Path(out_dir),
                  size=size, num_frames=num_frames)


def clip_relpath(spec: ClipSpec, suffix: str = ".mp4") -> str:
    method = METHODS[spec.method]
    return "/".join((CATEGORY_FOLDERS[method.category], spec.method, spec.identity.id,
                     spec.clip_id + suffix))


def write_clip(spec: ClipSpec, out_dir: str | os.PathLike, stills: Mapping[str, faces.Still],
               size: int, num_frames: int) -> dict[str, str]:
    """Render one planned clip, write its mp4 and npz under ``out_dir``; return its
    meta_data.csv row. Depends only on its arguments (any process, any order)."""
    out_dir = pathlib.Path(out_dir)
    result = manipulations.render_clip(spec, stills, size, num_frames)
    rel = clip_relpath(spec)
    mp4 = out_dir / rel
    write_mp4(mp4, result.frames, result.audio, crf=spec.take.crf)
    np.savez_compressed(mp4.with_suffix(".npz"), **result.truth)
    method = METHODS[spec.method]
    return {
        "path": rel, "clip_id": spec.clip_id, "split": spec.split,
        "label": contract.LABEL_NAMES[int(spec.method != "real")],
        "category": method.category, "method": spec.method, "identity": spec.identity.id,
        "video_fake": str(int(method.video_fake)), "audio_fake": str(int(method.audio_fake)),
        "sync_fake": str(int(method.sync_fake)),
        "source_identity": spec.face_identity.id, "audio_identity": spec.audio_identity.id,
        "desync_ms": str(spec.desync_ms), "num_frames": str(num_frames),
        "seed": str(spec.seed), "source_clip_id": spec.source_clip_id,
        "region": method.region, "base_still": spec.face_identity.still,
        "voice": result.voice, "transcript": result.transcript,
        "video_transcript": result.video_transcript, "crf": str(spec.take.crf),
    }


def _make_clip(spec: ClipSpec) -> dict[str, str]:
    return write_clip(spec, _STATE["out_dir"], _STATE["stills"], _STATE["size"],
                      _STATE["num_frames"])


def _alphabet() -> dict:
    return {
        "phones": list(tts.PHONES), "phone_scheme": "arpabet",
        "visemes": list(alphabet.VISEMES),
        "phone_to_viseme": {p: alphabet.ARPABET_TO_VISEME[p] for p in tts.PHONES},
        "silence_phone": tts.PHONES.index(tts.SILENCE),
        "frame_rate": contract.VIDEO_FPS, "sample_rate": contract.AUDIO_SR,
        "no_phone": -1,
    }


def _write_json(path: pathlib.Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=1, sort_keys=True, default=str) + "\n")


def plan(*, num_clips: int, seed: int = 0, seconds: float = 3.0,
         real_fraction: float = 0.5, method_weights: Mapping[str, float] | None = None,
         reals_per_identity: float = 3.0, stills_dir: str | None = None
         ) -> tuple[list[faces.Identity], list[ClipSpec]]:
    """The identities and clip specs ``generate`` would render (no files written)."""
    stills = faces.load_stills(stills_dir)
    try:
        return plan_clips(num_clips=num_clips, seed=seed, seconds=seconds,
                          stills=[(s.name, s.gender) for s in stills],
                          real_fraction=real_fraction, method_weights=method_weights,
                          reals_per_identity=reals_per_identity)
    except ValueError as e:
        raise ConfigError(f"synthetic_av: {e}") from e


def generate(out_dir: str | os.PathLike, *, num_clips: int, seed: int = 0,
             seconds: float = 3.0, size: int = 192, workers: int | None = None,
             progress: bool = True, real_fraction: float = 0.5,
             method_weights: Mapping[str, float] | None = None,
             reals_per_identity: float = 3.0, stills_dir: str | None = None) -> pathlib.Path:
    """Generate ``num_clips`` clips of ``seconds`` at ``size`` x ``size`` pixels into
    ``out_dir``; returns the path of its ``meta_data.csv``.

    ``real_fraction`` of the clips are real; the fakes are spread over the methods by
    ``method_weights`` (method name -> weight, default equal over ``FAKE_METHODS``).
    ``workers`` processes render clips (default: one per CPU); the result does not
    depend on it. ``stills_dir`` is the realtalk folder the face stills come from
    (default ``faces.realtalk_dir()``; see ``faces.STILL_SOURCES``).
    """
    if num_clips < 1:
        raise ConfigError(f"num_clips must be positive, got {num_clips}")
    if size % 2 or size < 96:
        raise ConfigError(f"size must be even and >= 96 pixels, got {size}")
    num_frames = int(round(seconds * contract.VIDEO_FPS))
    if num_frames < contract.VIDEO_FPS:
        raise ConfigError(f"clips must last at least 1 s, got {seconds} s")
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stills = faces.load_stills(stills_dir)
    identities, specs = plan(num_clips=num_clips, seed=seed, seconds=seconds,
                             real_fraction=real_fraction, method_weights=method_weights,
                             reals_per_identity=reals_per_identity, stills_dir=stills_dir)

    workers = min(workers or os.cpu_count() or 1, len(specs))
    init_args = (stills, str(out), size, num_frames)
    rows: list[dict[str, str]] = []
    bar = tqdm(total=len(specs), desc="synthetic_av", unit="clip", disable=not progress)
    if workers <= 1:
        _init_worker(*init_args)
        for spec in specs:
            rows.append(_make_clip(spec))
            bar.update()
    else:
        # forkserver: workers start from a clean process, never from a fork of a caller
        # that may hold threads (JAX, TFDS).
        ctx = multiprocessing.get_context("forkserver")
        # Workers fork from a server that has imported the generator (and the caller's
        # main module, as multiprocessing does by default), so they start in ~no time.
        ctx.set_forkserver_preload(["__main__", "datasets.synthetic_av.generate"])
        with ctx.Pool(workers, initializer=_init_worker, initargs=(*init_args, True)) as pool:
            for row in pool.imap_unordered(_make_clip, specs, chunksize=1):
                rows.append(row)
                bar.update()
    bar.close()

    rows.sort(key=lambda r: r["clip_id"])
    meta = out / "meta_data.csv"
    with open(meta, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=META_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    _write_json(out / "alphabet.json", _alphabet())
    _write_json(out / "generator.json", {
        "version": GENERATOR_VERSION, "num_clips": num_clips, "seed": seed,
        "seconds": seconds, "size": size, "num_frames": num_frames,
        "real_fraction": real_fraction,
        "method_weights": dict(method_weights) if method_weights else None,
        "reals_per_identity": reals_per_identity,
        "stills": [{"name": s.name, "gender": s.gender, "box": s.geometry.box,
                    "source": s.source} for s in stills],
        "identities": [dataclasses.asdict(i) for i in identities],
    })
    return meta


def summary(rows: Sequence[Mapping[str, str]]) -> str:
    """Text table: clips per category / method / split."""
    count = collections.Counter((r["category"], r["method"], r["split"]) for r in rows)
    splits = sorted({r["split"] for r in rows}, key=["train", "val", "test"].index)
    lines = [f"{'category':8s} {'method':26s} " + " ".join(f"{s:>6s}" for s in splits)
             + f" {'total':>6s}"]
    for cat, method in sorted({(c, m) for c, m, _ in count}):
        per = [count[(cat, method, s)] for s in splits]
        lines.append(f"{cat:8s} {method:26s} " + " ".join(f"{n:6d}" for n in per)
                     + f" {sum(per):6d}")
    totals = [sum(n for (c, m, s), n in count.items() if s == sp) for sp in splits]
    lines.append(f"{'':8s} {'total':26s} " + " ".join(f"{n:6d}" for n in totals)
                 + f" {sum(totals):6d}")
    return "\n".join(lines)


def read_meta(path: str | os.PathLike) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m datasets.synthetic_av.generate",
        description="Generate the synthetic audio-visual deepfake benchmark.")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    parser.add_argument("--num_clips", type=int, help="override the preset's clip count")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=None,
                        help="processes (default: one per CPU)")
    parser.add_argument("--stills_dir", default=None,
                        help=f"realtalk folder the face stills come from (default "
                             f"${faces.REALTALK_ENV} or {faces.DEFAULT_REALTALK})")
    parser.add_argument("--no_progress", action="store_true")
    args = parser.parse_args(argv)
    kwargs = dict(PRESETS[args.preset])
    if args.num_clips:
        kwargs["num_clips"] = args.num_clips
    start = time.perf_counter()
    try:
        meta = generate(args.out, seed=args.seed, workers=args.workers,
                        progress=not args.no_progress, stills_dir=args.stills_dir, **kwargs)
    except AVDetectError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    elapsed = time.perf_counter() - start
    rows = read_meta(meta)
    print(summary(rows))
    print(f"{len(rows)} clips of {kwargs['seconds']} s in {elapsed:.1f} s: "
          f"{len(rows) / elapsed:.2f} clips/s -> {meta}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
