"""The ``avdetect`` command line (also ``python -m avdetect``).

    avdetect detect PATH... --model MODEL [--out DIR]   score videos
    avdetect export WORKDIR [--out FILE]                 params-only model file

Subcommands register themselves with :func:`command` (name, help, add-arguments
function, run function returning the exit code), so other modules can add theirs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, Callable, Sequence

Command = tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]
COMMANDS: dict[str, Command] = {}


def command(name: str, help_text: str, add_arguments: Callable[[argparse.ArgumentParser], None],
            run: Callable[[argparse.Namespace], int]) -> None:
    """Registers subcommand ``name``: ``add_arguments(parser)`` declares its options and
    ``run(args)`` does the work and returns the process exit code."""
    COMMANDS[name] = (help_text, add_arguments, run)


def _err(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------
# detect
# ----------------------------------------------------------------------------------

DETECT_DESCRIPTION = """\
Score videos: decode, track the face, crop the mouth/face, compute the log-mel, score
sliding windows with a trained model and aggregate them into a video score and a
verdict ('fake' when score >= threshold). Prints a table; with --out also writes
<name>.json and <name>.timeline.png per video and summary.json.
"""

DETECT_EPILOG = """\
PATH: a video file, a folder (its video files; --recursive for sub-folders) or a glob
pattern (quote it to let avdetect expand it, e.g. 'clips/**/*.mp4').

MODEL: a training workdir (latest checkpoint, its config.json and the threshold of its
validation report eval_<val_split>.json), or a file written by `avdetect export`.

Windows: T = the model's config.data.window frames (25 fps), stride T by default (the
evaluation pipeline's tiling; the last partial window is padded and masked). The video
score is the mean of the window scores weighted by their valid frames. Without a
validation report the threshold is the midpoint of the score's scale (0 for log-odds)
and every output says so; --threshold overrides it.

Flags in the JSON: no_face_frames (count, fraction, time ranges), no_audio,
silent_audio_frames, too_short (shorter than one window: scored from one window with
the missing frames masked; files under 3 frames cannot be scored), corrupt_frames,
corrupt_audio_packets.

Output names: <name> is the file's stem; inputs sharing a stem keep their extension
(a.mp4, a.webm); names that still clash get -2, -3, ... (never a name another input has).

Exit codes:
  0  every file was scored (whatever the verdicts)
  2  usage error: bad arguments, a folder without videos, a glob matching nothing, or a
     model that cannot be loaded (nothing is scored)
  3  some files could not be scored, the others were (see the table / summary.json)
  4  no file could be scored

Compiled models are cached in $AVDETECT_COMPILE_CACHE (default ~/.cache/avdetect/jax;
'off' disables it), so only the first run of a model pays the XLA compilation.
"""


def _add_detect_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", metavar="PATH", help="video files, folders or globs")
    p.add_argument("--model", "-m", default=os.environ.get("AVDETECT_MODEL"),
                   help="training workdir or exported .msgpack file (default: $AVDETECT_MODEL)")
    p.add_argument("--step", type=int, default=None, help="checkpoint step of a workdir (default: latest)")
    p.add_argument("--out", "-o", metavar="DIR", help="write <name>.json, <name>.timeline.png "
                   "and summary.json here")
    p.add_argument("--batch-size", type=int, default=8, help="windows per model call (default 8)")
    p.add_argument("--stride", type=int, default=None,
                   help="frames between window starts (default: the window, no overlap)")
    p.add_argument("--threshold", type=float, default=None,
                   help="decision threshold overriding the model's")
    p.add_argument("--recursive", "-r", action="store_true", help="search folders recursively")
    p.add_argument("--format", choices=("table", "json"), default="table",
                   help="stdout: a table (default) or the summary JSON")
    p.add_argument("--no-png", action="store_true", help="with --out: skip the timeline PNGs")
    p.add_argument("--timings", action="store_true",
                   help="time every stage (decode, face track, crop, audio, log-mel, windows, "
                        "model compile, model, outputs) and print the breakdown")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--debug", action="store_true", help="raise unexpected errors (tracebacks)")


def _fmt_score(x: float) -> str:
    return f"{x:+.3f}" if abs(x) < 1000 else f"{x:+.3g}"


def _short_flags(doc: dict[str, Any]) -> str:
    f = doc["flags"]
    parts = []
    if f["no_face_frames"]["count"]:
        parts.append(f"no-face {100 * f['no_face_frames']['fraction']:.0f}%")
    if f["no_audio"]:
        parts.append("no-audio")
    elif f["silent_audio_frames"]["count"]:
        parts.append(f"silent {100 * f['silent_audio_frames']['fraction']:.0f}%")
    if f["too_short"]:
        parts.append("too-short")
    if f["corrupt_frames"] or f["corrupt_audio_packets"]:
        parts.append(f"corrupt {f['corrupt_frames']}v/{f['corrupt_audio_packets']}a")
    if doc["threshold"]["origin"] == "default":
        parts.append("default-threshold")
    return ", ".join(parts) or "-"


def format_table(entries: Sequence[dict[str, Any]]) -> str:
    """The terminal table of detect's summary entries (scored and failed files)."""
    rows = [("file", "verdict", "score", "threshold", "seconds", "windows", "flags")]
    for e in entries:
        name = os.path.basename(e["file"])
        if e["status"] == "scored":
            rows.append((name, e["verdict"].upper(), _fmt_score(e["score"]),
                         _fmt_score(e["threshold"]["value"]), f"{e['duration_s']:.2f}",
                         str(e["n_windows"]), e["flags_text"]))
        else:
            rows.append((name, "ERROR", "", "", "", "",
                         f"{e['error']['kind']}: {e['error']['reason']}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = []
    for j, r in enumerate(rows):
        cells = [c.ljust(w) if i in (0, 1) else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))]
        lines.append("  ".join(cells) + "  " + r[-1])
        if j == 0:
            lines.append("-" * (sum(widths) + 2 * len(widths) + len("flags")))
    return "\n".join(lines)


def format_timings(entries: Sequence[dict[str, Any]]) -> str:
    """Per-file stage times (seconds) as a table, stages in pipeline order."""
    order = ["probe", "decode_video", "face_track", "crop", "decode_audio", "logmel",
             "preprocess_other", "preprocess", "windows", "model_compile", "model", "aggregate",
             "timeline_png", "json", "total"]
    scored = [e for e in entries if e["status"] == "scored"]
    if not scored:
        return "(no file scored: no timings)"
    stages = [s for s in order if any(s in e["timings_s"] for e in scored)]
    head = f"{'stage':18s}" + "".join(f"{os.path.basename(e['file'])[:16]:>18s}" for e in scored)
    lines = ["timings (s; 'preprocess' includes the stages above it, 'total' all of them):",
             head]
    for s in stages:
        lines.append(f"{s:18s}" + "".join(
            f"{e['timings_s'][s]:18.3f}" if s in e["timings_s"] else f"{'':18s}" for e in scored))
    return "\n".join(lines)


def enable_compile_cache() -> str | None:
    """Turns on JAX's persistent compilation cache so a later run skips XLA compilation
    of the same model: folder ``$AVDETECT_COMPILE_CACHE`` (``off`` disables it), default
    ``$XDG_CACHE_HOME/avdetect/jax`` (``~/.cache/avdetect/jax``). Returns the folder."""
    where = os.environ.get("AVDETECT_COMPILE_CACHE", "")
    if where.lower() in ("off", "0", "none", "false"):
        return None
    if not where:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        where = os.path.join(base, "avdetect", "jax")
    try:
        os.makedirs(where, exist_ok=True)
    except OSError:
        return None       # an unwritable cache only costs time: run without it
    import jax
    jax.config.update("jax_compilation_cache_dir", where)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    return where


def run_detect(args: argparse.Namespace) -> int:
    from avdetect import detect
    from avdetect.errors import AVDetectError

    progress = not args.no_progress
    if args.batch_size <= 0:
        _err(f"avdetect detect: --batch-size must be positive, got {args.batch_size}")
        return detect.EXIT_USAGE
    if args.stride is not None and args.stride <= 0:
        _err(f"avdetect detect: --stride must be positive, got {args.stride}")
        return detect.EXIT_USAGE
    if not args.model:
        _err("avdetect detect: --model is required (a training workdir or an exported "
             ".msgpack file; or set AVDETECT_MODEL)")
        return detect.EXIT_USAGE
    files, problems = detect.expand_paths(args.paths, recursive=args.recursive)
    if problems:
        for p in problems:
            _err(f"avdetect detect: {p}")
        _err("avdetect detect: nothing scored; fix the PATH arguments")
        return detect.EXIT_USAGE

    enable_compile_cache()
    from avdetect.inference import load_model
    t0 = time.perf_counter()
    try:
        model = load_model(args.model, step=args.step)
    except Exception as e:   # a model path is user input: say why it is unusable
        if args.debug:
            raise
        _err(f"avdetect detect: cannot load the model {args.model}: {e}")
        return detect.EXIT_USAGE
    load_s = time.perf_counter() - t0
    if args.stride is not None and args.stride > model.window:
        _err(f"avdetect detect: --stride {args.stride} is larger than the window "
             f"({model.window} frames): frames would be skipped")
        return detect.EXIT_USAGE

    out_dir = args.out
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
    names = detect.output_names(files)
    entries: list[dict[str, Any]] = []
    from tqdm import tqdm
    bar = tqdm(total=len(files), desc="detect", unit="file",
               disable=None if progress and len(files) > 1 else True)   # None: terminals only
    for path, name in zip(files, names):
        try:
            result = detect.score_video(path, model, batch_size=args.batch_size,
                                        stride=args.stride, threshold=args.threshold,
                                        progress=progress, timings=args.timings)
        except Exception as e:   # one bad file must not stop the others
            if args.debug and not isinstance(e, AVDetectError):
                raise
            entry = detect.error_record(path, e)
            entries.append(entry)
            tqdm.write(f"avdetect detect: cannot score {path}: {entry['error']['reason']} "
                       f"[{entry['error']['kind']}]", file=sys.stderr)
            bar.update(1)
            continue
        entry: dict[str, Any] = {"file": path, "status": "scored"}
        if out_dir:
            if not args.no_png:
                from avdetect.timeline import save_timeline
                t1 = time.perf_counter()
                entry["timeline"] = save_timeline(result, os.path.join(out_dir, f"{name}.timeline.png"))
                result.timings["timeline_png"] = time.perf_counter() - t1
                result.timings["total"] += result.timings["timeline_png"]
            t1 = time.perf_counter()
            entry["json"] = os.path.join(out_dir, f"{name}.json")
            with open(entry["json"], "w", encoding="utf-8") as f:
                json.dump(result.to_json(), f, indent=1)
            result.timings["json"] = time.perf_counter() - t1   # in the summary, not the file
            result.timings["total"] += result.timings["json"]
        doc = result.to_json()
        entry.update(score=doc["score"], verdict=doc["verdict"], threshold=doc["threshold"],
                     duration_s=doc["duration_s"], n_windows=len(doc["windows"]),
                     flags=doc["flags"], warnings=doc["warnings"], timings_s=doc["timings_s"])
        entry["flags_text"] = _short_flags(doc)
        entries.append(entry)
        bar.update(1)
    bar.close()

    n_ok = sum(e["status"] == "scored" for e in entries)
    n_bad = len(entries) - n_ok
    code = detect.exit_code(n_ok, n_bad)
    from avdetect.result import SCHEMA_VERSION
    summary = {"schema_version": SCHEMA_VERSION, "model": model.describe(),
               "model_load_s": round(load_s, 3),
               "counts": {"files": len(entries), "scored": n_ok, "failed": n_bad},
               "exit_code": code,
               "files": [{k: v for k, v in e.items() if k != "flags_text"} for e in entries]}
    if out_dir:
        with open(os.path.join(out_dir, "summary.json"), "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=1)
    if args.format == "json":
        print(json.dumps(summary, indent=1))
    else:
        print(format_table(entries))
        thr = model.describe()["threshold"]
        print(f"\nmodel: {model.source['path']} (step {model.step}); threshold "
              f"{args.threshold if args.threshold is not None else thr['value']:.4g}: "
              f"{'given on the command line' if args.threshold is not None else thr['source']}")
        print(f"{n_ok} scored, {n_bad} could not be scored"
              + (f"; outputs in {out_dir}" if out_dir else "; use --out DIR for JSON + timeline PNGs"))
        if args.timings:
            print()
            print(format_timings(entries))
            print(f"model load {load_s:.3f} s (once per run)")
    sys.stdout.flush()
    return code


# ----------------------------------------------------------------------------------
# export
# ----------------------------------------------------------------------------------

def _add_export_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", metavar="WORKDIR", help="training workdir (or its checkpoints folder "
                   "or one checkpoints/<step> folder)")
    p.add_argument("--out", "-o", metavar="FILE", default=None,
                   help="output file (default: WORKDIR/model-<step>.msgpack)")
    p.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")


def run_export(args: argparse.Namespace) -> int:
    from avdetect.export import export_model
    from avdetect.inference import SUFFIX, load_workdir
    try:
        model = load_workdir(args.source, args.step)
    except Exception as e:   # a workdir is user input: say why it is unusable
        _err(f"avdetect export: cannot load {args.source}: {e}")
        return 2
    out = args.out or os.path.join(model.source["path"], f"model-{model.step}{SUFFIX}")
    export_model(model, out)
    size = os.path.getsize(out)
    print(f"wrote {out} ({size / 2**20:.2f} MiB): {model.config.method}, step {model.step}, "
          f"threshold {model.threshold:.4g} ({model.threshold_source})")
    for note in model.notes:
        print(f"note: {note}")
    return 0


command("detect", "score videos (JSON, table, timeline PNG)", _add_detect_arguments, run_detect)
command("export", "write a params-only model file for inference", _add_export_arguments, run_export)


# ----------------------------------------------------------------------------------
# main
# ----------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="avdetect", description="Audio-visual deepfake detection.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (help_text, add_arguments, _) in COMMANDS.items():
        kwargs: dict[str, Any] = {"help": help_text}
        if name == "detect":
            kwargs.update(description=DETECT_DESCRIPTION, epilog=DETECT_EPILOG,
                          formatter_class=argparse.RawDescriptionHelpFormatter)
        add_arguments(sub.add_parser(name, **kwargs))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs one subcommand; returns its exit code (argparse usage errors exit with 2)."""
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command][2](args)
    except KeyboardInterrupt:
        _err(f"avdetect {args.command}: interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
