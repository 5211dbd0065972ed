r"""The demo (``make demo``): the whole system end to end on one CPU machine.

    python -m avdetect.demo --out demo_out [--quick] [--workers 2] [--steps N]

Six stages, each with a banner and its wall time (``<tag>`` = 'demo' or 'quick' and a hash
of the generator settings, so different settings never share outputs):

1. **generate** the synthetic benchmark: ``datasets.synthetic_av.generate``, preset
   'demo' (600 three-second clips, 192 px, seed 0) -> ``<out>/generated/<tag>/``;
2. **build** its TFDS shards with the real preprocessing (face tracking, mouth / face
   crops, log-mel) and the oracle teacher's per-frame viseme posteriors
   (``avdetect.teachers.build_teacher('oracle')``, K = 14), as the builder config
   ``synthetic_av/demo_oracle`` -> ``<out>/tfds/`` (rebuilt if the generated folder
   changed);
3. **preprocess** one real fixture clip and print what was found (frames, face-found
   rate, audio, crop and log-mel shapes) -> its contact sheet
   ``<out>/preprocess/<clip>_contact_sheet.png``;
4. **train** ``configs/corrdistill.py:tiny,demo`` on the benchmark
   (``avdetect.train.train_and_evaluate``, workdir ``<out>/train/<tag>/corrdistill``);
5. **evaluate**: the run's final evaluation (decision threshold chosen on the
   validation split, applied to the test split), printed as the per-category and
   per-method Markdown table -> ``<out>/results.md``;
6. **detect**: export the model (``<out>/model/corrdistill-<tag>.msgpack``) and score the
   16 real fixture clips with ``avdetect.detect``, verdict and score next to the labels
   of their manifest, plus the real-vs-fake AUC on them -> ``<out>/detect/``.

Re-running reuses every finished stage's outputs (the generated folder, the built
shards, the trained checkpoint, the scores); an interrupted training resumes from its
last checkpoint. ``--quick`` is the reduced run the test suite uses: the 'tiny'
generator preset with 1.2-second 128-px clips, a few training steps, 4 fixture clips.
The stage times, the load average and the goal check are printed at the end and written
to ``<out>/demo_summary.json``.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import json
import logging as std_logging
import os
import pathlib
import shutil
import sys
import time
from typing import Any, Callable

from avdetect.errors import AVDetectError

CONFIG_MODULE = "configs.corrdistill"
CONFIG_ARG = "tiny,demo"            # the tiny student, tuned for the demo's time budget
TEACHER = "oracle"
DEMO_CLIP = "real_video-retalking_1.mp4"   # the real fixture clip of stage 3
GOAL_SECONDS = 600.0                # the demo's goal: < 10 minutes on 2 cores ...
GOAL_AUC = 0.95                     # ... with synthetic test AUC >= 0.95
RULE = "=" * 88


@dataclasses.dataclass(frozen=True)
class DemoPlan:
    """What one demo run does (the full demo or ``--quick``)."""

    name: str                       # 'demo' | 'quick'
    preset: str                     # generator preset (datasets.synthetic_av.generate)
    generator: dict[str, Any]       # generate() keyword arguments
    config_arg: str                 # get_config argument of CONFIG_MODULE
    steps: int | None = None        # training steps (None = the config's)
    fast_compile: bool = False      # config.train.fast_compile (quick runs)
    max_clips: int | None = None    # fixture clips to score (None = all)

    @property
    def tag(self) -> str:
        """Folder name of this plan's data and run: its name and a hash of the generator
        spec (a changed preset never reuses the outputs of another)."""
        blob = json.dumps([self.generator, 0], sort_keys=True).encode()
        return f"{self.name}-{hashlib.sha256(blob).hexdigest()[:8]}"


def make_plan(quick: bool, steps: int | None = None) -> DemoPlan:
    """The full demo plan, or the quick one (see the module docstring)."""
    from datasets.synthetic_av import generate as gen
    if quick:
        return DemoPlan(name="quick", preset="tiny",
                        generator={**gen.PRESETS["tiny"], "seconds": 1.2, "size": 128},
                        config_arg=CONFIG_ARG, steps=steps or 8, fast_compile=True, max_clips=4)
    return DemoPlan(name="demo", preset="demo", generator=dict(gen.PRESETS["demo"]),
                    config_arg=CONFIG_ARG, steps=steps)


@dataclasses.dataclass(frozen=True)
class Paths:
    """Every output of the demo under ``--out``."""

    out: pathlib.Path
    tag: str

    @property
    def generated(self) -> pathlib.Path:
        return self.out / "generated" / self.tag

    @property
    def tfds(self) -> pathlib.Path:
        return self.out / "tfds"

    @property
    def preprocess(self) -> pathlib.Path:
        return self.out / "preprocess"

    @property
    def workdir(self) -> pathlib.Path:
        return self.out / "train" / self.tag / "corrdistill"

    @property
    def model(self) -> pathlib.Path:
        return self.out / "model" / f"corrdistill-{self.tag}.msgpack"

    @property
    def detect(self) -> pathlib.Path:
        return self.out / "detect"

    @property
    def results(self) -> pathlib.Path:
        return self.out / "results.md"

    @property
    def summary(self) -> pathlib.Path:
        return self.out / "demo_summary.json"


@dataclasses.dataclass
class StageResult:
    name: str
    seconds: float
    reused: bool
    info: dict[str, Any]


def dataset_name(plan: DemoPlan) -> str:
    """The TFDS name of the demo's build: its own builder config (``demo_oracle``),
    because the oracle's posteriors have K = 14 classes where the registered synthetic_av
    configs store K = 40 (the deep_avsr alphabet)."""
    return f"synthetic_av/{plan.name}_{TEACHER}"


# ----------------------------------------------------------------------------------
# Stage 1: generate
# ----------------------------------------------------------------------------------

def stage_generate(plan: DemoPlan, paths: Paths, workers: int) -> tuple[dict, bool]:
    """Generate the benchmark into ``paths.generated`` (once: a finished folder holds
    ``meta_data.csv``; an interrupted one is ``.partial`` and starts over)."""
    from datasets.synthetic_av import generate as gen

    out = paths.generated
    meta = out / "meta_data.csv"
    reused = meta.is_file()
    if not reused:
        tmp = out.with_name(out.name + ".partial")
        if tmp.exists():
            shutil.rmtree(tmp)
        spec = ", ".join(f"{k}={v}" for k, v in sorted(plan.generator.items()))
        print(f"generating preset '{plan.preset}' ({spec}), seed 0, {workers} worker(s) "
              f"-> {out}")
        gen.generate(tmp, seed=0, workers=workers, progress=True, **plan.generator)
        os.replace(tmp, out)
    rows = gen.read_meta(meta)
    print(gen.summary(rows))
    return {"clips": len(rows), "folder": str(out)}, reused


# ----------------------------------------------------------------------------------
# Stage 2: build
# ----------------------------------------------------------------------------------

def stage_build(plan: DemoPlan, paths: Paths, workers: int) -> tuple[dict, bool]:
    """Build the TFDS shards of the generated folder with the oracle teacher."""
    from avdetect import contract
    from avdetect.data import build
    from avdetect.teachers import build_teacher
    from datasets.synthetic_av.synthetic_av import SyntheticAvConfig

    teacher = build_teacher(TEACHER)
    k = teacher.teacher.num_classes
    name = dataset_name(plan)
    cfg = SyntheticAvConfig(name=name.split("/", 1)[1], preset=plan.preset,
                            face_size=contract.FACE_SIZE_DEFAULT, teacher_dim=k,
                            description=f"The demo's build of the '{plan.preset}' preset with "
                                        f"the {TEACHER} teacher (K={k}).")
    print(f"building {name} (teacher '{TEACHER}', K={k}; {workers} preprocessing worker(s)) "
          f"-> {paths.tfds}")
    stale = built_from(paths.tfds, name) not in (None, str(paths.generated))
    if stale:
        print(f"(the existing {name} was built from another generated folder: rebuilding; "
              "the preprocessing cache is kept)")
    _, report = build.build("synthetic_av", data_dir=str(paths.tfds),
                            manual_dir=str(paths.generated), workers=workers, teacher=teacher,
                            overwrite=stale, builder_kwargs={"config": cfg})
    print(build.format_report(report))
    return {"dataset": name, "teacher_classes": k, "written": report.get("written", {}),
            "skipped": len(report.get("skipped", [])),
            "clips_per_s": report.get("clips_per_s")}, bool(report.get("reused_existing"))


def built_from(data_dir: pathlib.Path, name: str) -> str | None:
    """The source folder an existing build of ``name`` was made from (None: not built)."""
    from avdetect.data import build

    reports = sorted((data_dir / name).glob(f"*/{build.REPORT_NAME}"))
    if not reports:
        return None
    return json.loads(reports[-1].read_text()).get("source_root")


# ----------------------------------------------------------------------------------
# Stage 3: preprocess one real clip
# ----------------------------------------------------------------------------------

def stage_preprocess(paths: Paths, fixtures: pathlib.Path) -> tuple[dict, bool]:
    """Preprocess one real fixture clip, print what was found, save its contact sheet."""
    from avdetect import contract
    from avdetect.preprocess.contact_sheet import save_contact_sheet
    from avdetect.preprocess.pipeline import preprocess_video

    clip = fixtures / DEMO_CLIP
    stem = clip.stem
    sheet = paths.preprocess / f"{stem}_contact_sheet.png"
    record = paths.preprocess / f"{stem}.json"
    reused = sheet.is_file() and record.is_file()
    if reused:
        info = json.loads(record.read_text())
    else:
        paths.preprocess.mkdir(parents=True, exist_ok=True)
        feats = preprocess_video(clip, face_size=contract.FACE_SIZE_DEFAULT, progress=True)
        save_contact_sheet(feats, sheet)
        media = feats.info
        info = {
            "file": str(clip), "frames": feats.num_frames,
            "duration_s": round(feats.num_frames / contract.VIDEO_FPS, 3),
            "source": {"width": media.width, "height": media.height, "fps": media.src_fps,
                       "video_codec": media.video_codec, "audio_codec": media.audio_codec,
                       "sample_rate": media.src_sample_rate},
            "face_found_rate": round(feats.face_found_ratio, 4),
            "has_audio": bool(feats.has_audio),
            "mouth_shape": list(feats.mouth.shape), "face_shape": list(feats.face.shape),
            "logmel_shape": list(feats.logmel.shape),
            "logmel_range": [round(float(feats.logmel.min()), 2),
                             round(float(feats.logmel.max()), 2)],
            "contact_sheet": str(sheet),
        }
        record.write_text(json.dumps(info, indent=1))
    src = info["source"]
    print(f"clip          {info['file']}")
    print(f"source        {src['width']}x{src['height']} @ {src['fps']:.3g} fps "
          f"({src['video_codec']}), audio {src['audio_codec'] or 'none'} "
          f"@ {src['sample_rate'] or '-'} Hz")
    print(f"frames (T)    {info['frames']} at 25 fps = {info['duration_s']} s")
    print(f"face found    {100 * info['face_found_rate']:.1f}% of frames "
          "(detected or tracked; the rest interpolated / held)")
    print(f"audio         {'yes' if info['has_audio'] else 'NO (log-mel is zeros)'}")
    print(f"mouth crops   {tuple(info['mouth_shape'])} uint8    face crops "
          f"{tuple(info['face_shape'])} uint8")
    print(f"log-mel       {tuple(info['logmel_shape'])} (4 per video frame), values in "
          f"[{info['logmel_range'][0]}, {info['logmel_range'][1]}]")
    print(f"contact sheet {info['contact_sheet']}")
    return info, reused


# ----------------------------------------------------------------------------------
# Stages 4 and 5: train, evaluate
# ----------------------------------------------------------------------------------

def demo_config(plan: DemoPlan, paths: Paths):
    """The training config of the demo, bound to its built dataset."""
    import importlib

    from avdetect import protocols
    config = importlib.import_module(CONFIG_MODULE).get_config(plan.config_arg)
    if plan.steps:
        config.train.steps = int(plan.steps)
    if plan.fast_compile:
        config.train.fast_compile = True
        config.train.eval_every = 0
    return protocols.bind_dataset(config, dataset_name(plan), str(paths.tfds))


def stage_train(plan: DemoPlan, paths: Paths) -> tuple[dict, bool]:
    """Train (or reuse / resume) the demo's run; returns its stored result."""
    from avdetect import protocols

    config = demo_config(plan, paths)
    module = CONFIG_MODULE.replace(".", "/") + ".py"
    print(f"config   {module}:{plan.config_arg}" + (f" (steps={plan.steps})" if plan.steps else ""))
    print(f"data     {config.data.name} under {config.data.data_dir}; window T="
          f"{config.data.window}, batch {config.data.batch_size}, "
          f"teacher K={config.model.teacher_classes}")
    print(f"training {config.train.steps} steps, lr {config.optim.lr:g} -> {paths.workdir}")
    result, reused = protocols.train_once(config, str(paths.workdir))
    if reused:
        print(f"(a finished run with this config is in {paths.workdir}: reused)")
    return result, reused


def stage_evaluate(result: dict, paths: Paths, config_text: str) -> dict:
    """Print (and write) the test report of the trained run."""
    from avdetect import evaluation

    reports = result["reports"]
    test = reports.get("test") or next(iter(reports.values()))
    val = reports.get("validation")
    if val is not None:
        vo = val["video"]["overall"]
        print(f"validation: {vo['n_real']} real + {vo['n_fake']} fake videos, AUC "
              f"{vo['auc']:.4f}; threshold {val['threshold']['value']:.4g} "
              f"({val['threshold']['source']})")
    table = evaluation.report_markdown(test)
    print(table)
    paths.results.parent.mkdir(parents=True, exist_ok=True)
    paths.results.write_text(f"# avdetect demo results\n\nModel: {config_text}\n\n{table}")
    overall = test["video"]["overall"]
    return {"test_auc": overall["auc"], "test_acc": overall["acc"], "table": str(paths.results),
            "per_category_auc": {k: v["auc"] for k, v in
                                 test["video"].get("per_category", {}).items()}}


# ----------------------------------------------------------------------------------
# Stage 6: export and score the real clips
# ----------------------------------------------------------------------------------

def read_manifest(fixtures: pathlib.Path) -> list[dict[str, str]]:
    """Rows of the fixture folder's manifest.csv (file, label, category, ...)."""
    from avdetect.errors import FileMissingError
    manifest = fixtures / "manifest.csv"
    if not manifest.is_file():
        raise FileMissingError(manifest, "the fixture clips' manifest is missing")
    with open(manifest, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def pick_clips(rows: list[dict[str, str]], max_clips: int | None) -> list[dict[str, str]]:
    """All rows, or ``max_clips`` of them balanced between real and fake (manifest order)."""
    if not max_clips or max_clips >= len(rows):
        return rows
    real = [r for r in rows if r["label"] == "real"]
    fake = [r for r in rows if r["label"] != "real"]
    n_real = min(len(real), max(1, max_clips // 2))
    return real[:n_real] + fake[:max_clips - n_real]


def score_fixture_clips(model_path: pathlib.Path, fixtures: pathlib.Path,
                        rows: list[dict[str, str]]) -> list[dict[str, Any]]:
    """Score every listed fixture clip; a clip that cannot be scored gets its error."""
    from tqdm import tqdm

    from avdetect import detect, export
    from avdetect.errors import MediaError

    model = export.load_model(str(model_path))
    out = []
    for row in tqdm(rows, desc="scoring fixture clips", unit="clip"):
        entry = {"file": row["file"], "label": row["label"], "category": row.get("category", "")}
        try:
            res = detect.score_video(fixtures / row["file"], model)
        except MediaError as e:
            entry.update(status="error", error=f"{e.kind}: {e.reason}")
        else:
            entry.update(status="scored", score=res.score, verdict=res.verdict,
                         threshold=res.threshold, threshold_origin=res.threshold_origin,
                         face_found=round(float(res.face_found.mean()), 4),
                         frames=res.num_frames, warnings=res.warnings)
        out.append(entry)
    return out


def clip_metrics(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """AUC and accuracy of the scored clips against their manifest labels."""
    from avdetect import evaluation

    scored = [e for e in entries if e["status"] == "scored"]
    labels = [int(e["label"] != "real") for e in scored]
    out: dict[str, Any] = {"scored": len(scored), "failed": len(entries) - len(scored),
                           "n_real": labels.count(0), "n_fake": labels.count(1),
                           "auc": None, "acc": None}
    if scored:
        out["acc"] = sum((e["verdict"] == "fake") == bool(y)
                         for e, y in zip(scored, labels)) / len(scored)
    if 0 < sum(labels) < len(labels):
        out["auc"] = evaluation.roc_auc(labels, [e["score"] for e in scored])
    return out


def clips_markdown(entries: list[dict[str, Any]], metrics: dict[str, Any]) -> str:
    lines = ["| clip | label | manifest category | score | verdict | face found | note |",
             "|---|---|---|---|---|---|---|"]
    for e in entries:
        if e["status"] == "scored":
            right = (e["verdict"] == "fake") == (e["label"] != "real")
            note = "; ".join(e["warnings"]) or "-"
            lines.append(f"| {e['file']} | {e['label']} | {e['category']} | "
                         f"{e['score']:+.3f} | {e['verdict']} ({'right' if right else 'wrong'})"
                         f" | {100 * e['face_found']:.0f}% | {note} |")
        else:
            lines.append(f"| {e['file']} | {e['label']} | {e['category']} | – | ERROR | – | "
                         f"{e['error']} |")
    auc = "–" if metrics["auc"] is None else f"{metrics['auc']:.4f}"
    acc = "–" if metrics["acc"] is None else f"{metrics['acc']:.4f}"
    thr = next((e for e in entries if e["status"] == "scored"), None)
    thr_text = (f" at the threshold {thr['threshold']:+.4g} ({thr['threshold_origin']})"
                if thr else "")
    return ("\n".join(lines) + f"\n\nReal fixture clips: {metrics['n_real']} real, "
            f"{metrics['n_fake']} fake scored ({metrics['failed']} failed): AUC {auc}, "
            f"accuracy {acc}{thr_text}.\n")


def stage_detect(plan: DemoPlan, paths: Paths, fixtures: pathlib.Path,
                 train_result: dict) -> tuple[dict, bool]:
    """Export the trained model, score the fixture clips, print them beside their labels."""
    from avdetect import export

    rows = pick_clips(read_manifest(fixtures), plan.max_clips)
    scores_json = paths.detect / "realav_scores.json"
    key = {"model": str(paths.model), "step": train_result.get("step"),
           "trained": train_result.get("config"), "clips": [r["file"] for r in rows]}
    if scores_json.is_file():
        stored = json.loads(scores_json.read_text())
        if stored.get("key") == key and paths.model.is_file():
            print(f"(scores of this model on these clips are in {scores_json}: reused)")
            print(stored["table"])
            return stored["metrics"], True
    export.export_model(str(paths.workdir), str(paths.model))
    size_kb = paths.model.stat().st_size / 1024
    print(f"exported {paths.model} ({size_kb:.0f} KiB, params only)")
    print(f"scoring {len(rows)} real fixture clips from {fixtures} (labels from its "
          "manifest.csv; the model never saw these people or generators)")
    entries = score_fixture_clips(paths.model, fixtures, rows)
    metrics = clip_metrics(entries)
    table = clips_markdown(entries, metrics)
    print(table)
    paths.detect.mkdir(parents=True, exist_ok=True)
    scores_json.write_text(json.dumps({"key": key, "entries": entries, "metrics": metrics,
                                       "table": table}, indent=1))
    (paths.detect / "realav_scores.md").write_text(table)
    return metrics, False


# ----------------------------------------------------------------------------------
# Driver
# ----------------------------------------------------------------------------------

class _OwnInfoOnly(std_logging.Filter):
    """Keeps avdetect's own INFO lines (the trainer's steps, losses, evaluation) and every
    warning; drops the INFO chatter of libraries (orbax logs each checkpoint phase)."""

    package = os.path.dirname(os.path.abspath(__file__)) + os.sep

    def filter(self, record: std_logging.LogRecord) -> bool:
        own = os.path.abspath(record.pathname).startswith(self.package)
        return record.levelno >= std_logging.WARNING or own


def _run_stage(index: int, title: str, fn: Callable[[], tuple[Any, bool]],
               results: list[StageResult], name: str) -> Any:
    print(f"\n{RULE}\n[{index}/6] {title}\n{RULE}", flush=True)
    t0 = time.perf_counter()
    value, reused = fn()
    dt = time.perf_counter() - t0
    results.append(StageResult(name, dt, reused, value if isinstance(value, dict) else {}))
    print(f"--- stage {index} ({name}): {dt:.1f} s{' (reused earlier outputs)' if reused else ''}",
          flush=True)
    return value


def _load() -> str:
    try:
        one, five, _ = os.getloadavg()
        return f"load average {one:.2f} (5-min {five:.2f}) on {os.cpu_count()} cores"
    except OSError:
        return f"{os.cpu_count()} cores"


def run(out: str | os.PathLike, *, quick: bool = False, workers: int | None = None,
        steps: int | None = None, fixtures: str | os.PathLike | None = None) -> dict[str, Any]:
    """Runs the demo (see the module docstring); returns the summary it writes."""
    from datasets.synthetic_av import faces

    plan = make_plan(quick, steps)
    paths = Paths(pathlib.Path(out).resolve(), plan.tag)
    paths.out.mkdir(parents=True, exist_ok=True)
    fixtures_dir = pathlib.Path(fixtures) if fixtures else faces.fixtures_dir()
    workers = workers if workers is not None else min(2, os.cpu_count() or 1)
    t_start = time.perf_counter()
    load_start = _load()
    print(f"avdetect demo{' (--quick)' if quick else ''} -> {paths.out}; {load_start}")
    stages: list[StageResult] = []

    _run_stage(1, f"Generate the synthetic benchmark (preset '{plan.preset}', seed 0)",
               lambda: stage_generate(plan, paths, workers), stages, "generate")
    _run_stage(2, f"Build the TFDS shards (face tracking + crops + log-mel + {TEACHER} "
                  "teacher)", lambda: stage_build(plan, paths, workers), stages, "build")
    _run_stage(3, f"Preprocess a real fixture clip ({DEMO_CLIP})",
               lambda: stage_preprocess(paths, fixtures_dir), stages, "preprocess")

    from absl import flags, logging
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()       # Grain reads absl flags
    logging.set_verbosity(logging.INFO)
    # On the 'absl' logger itself: its records reach whichever handler the libraries set
    # up (TFDS configures Python's root handler), and every one of them passes here.
    std_logging.getLogger("absl").addFilter(_OwnInfoOnly())
    from avdetect import cli
    cli.enable_compile_cache()             # a re-run skips XLA compilation

    config_text = f"{CONFIG_MODULE.replace('.', '/')}.py:{plan.config_arg}"
    result = _run_stage(4, f"Train {config_text} on {dataset_name(plan)}",
                        lambda: stage_train(plan, paths), stages, "train")
    evaluated = _run_stage(5, "Evaluate: test split, threshold chosen on validation",
                           lambda: (stage_evaluate(result, paths, config_text), False),
                           stages, "evaluate")
    clips = _run_stage(6, "Export the model and score the real fixture clips",
                       lambda: stage_detect(plan, paths, fixtures_dir, result), stages, "detect")

    total = time.perf_counter() - t_start
    summary = {
        "quick": quick, "out": str(paths.out), "dataset": dataset_name(plan),
        "config": config_text, "steps": result.get("step"),
        "train_seconds": result.get("seconds"),
        "stages": [dataclasses.asdict(s) for s in stages],
        "wall_seconds": round(total, 1), "load_at_start": load_start, "load_at_end": _load(),
        "synthetic_test_auc": evaluated["test_auc"], "realav": clips,
        "goal": {"seconds": GOAL_SECONDS, "auc": GOAL_AUC,
                 "met_time": total < GOAL_SECONDS,
                 "met_auc": (evaluated["test_auc"] or 0.0) >= GOAL_AUC},
    }
    paths.summary.write_text(json.dumps(summary, indent=1, default=str))
    print(f"\n{RULE}\nSummary\n{RULE}")
    for s in stages:
        print(f"  {s.name:<11s}{s.seconds:8.1f} s{'  (reused)' if s.reused else ''}")
    print(f"  {'total':<11s}{total:8.1f} s   ({load_start} at the start; {_load()} now)")
    auc = evaluated["test_auc"]
    print(f"  synthetic test AUC {auc:.4f}" if auc is not None else "  synthetic test AUC –")
    if clips.get("auc") is not None:
        print(f"  real fixture clips AUC {clips['auc']:.4f} ({clips['n_real']} real, "
              f"{clips['n_fake']} fake)")
    if not quick:
        print(f"  goal (< {GOAL_SECONDS / 60:.0f} min on 2 cores, AUC >= {GOAL_AUC}): time "
              f"{'met' if summary['goal']['met_time'] else 'NOT met'}, AUC "
              f"{'met' if summary['goal']['met_auc'] else 'NOT met'}"
              + ("" if not any(s.reused for s in stages) else
                 " (stages were reused: the time is not a fresh run's)"))
    print(f"  outputs: {paths.results}, {paths.detect}, {paths.summary}")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m avdetect.demo",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="demo_out", help="output folder (default demo_out)")
    parser.add_argument("--quick", action="store_true",
                        help="reduced run: tiny preset, short clips, few steps, 4 clips")
    parser.add_argument("--workers", type=int, default=None,
                        help="generator / preprocessing processes (default 2)")
    parser.add_argument("--steps", type=int, default=None, help="override the training steps")
    parser.add_argument("--fixtures", default=None,
                        help="folder of the real fixture clips + manifest.csv "
                             "(default ../shared/fixtures/realav)")
    args = parser.parse_args(argv)
    try:
        run(args.out, quick=args.quick, workers=args.workers, steps=args.steps,
            fixtures=args.fixtures)
    except AVDetectError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted: run the same command again to continue where it stopped",
              file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
