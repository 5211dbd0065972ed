r"""The demo (``make demo``): the real-footage recipe end to end on one CPU machine.

    python -m avdetect.demo --out demo_out [--quick] [--workers 2] [--steps N]

Five stages, each with a banner and its wall time (``<tag>`` = 'demo' or 'quick' and a
hash of the plan, so different plans never share outputs):

1. **build** the ``realtalk`` shards (``datasets/realtalk``: the real clips and AI-
   generated talking faces of ``../shared/realtalk``, identity-disjoint train /
   validation / test splits) with the real preprocessing (face-mesh landmarks, aligned
   mouth / face crops, lip points, log-mel) and the build-time pseudo-fakes of every
   split's real clips (audio shifted / swapped / reversed / from another sentence /
   re-voiced by TTS, frozen or blended mouths; each its own method) -> ``<out>/tfds/``;
2. **preprocess** one real fixture clip and print what was found (frames, face-found
   rate, audio, crop and log-mel shapes) -> its contact sheet
   ``<out>/preprocess/<clip>_contact_sheet.png``;
3. **train** the real-footage recipe (``CONFIG``: see that config's docstring) on the
   train split, with on-the-fly audio pseudo-fakes of its real windows
   (workdir ``<out>/train/<tag>/<method>``);
4. **evaluate** on the test split - identities never seen in training: the decision
   threshold chosen on the validation split, the per-method table (reals, the pseudo-
   fakes of the test reals, realtalk's generated fakes; every row says how many clips it
   holds), also with leading/trailing digital silence trimmed -> ``<out>/results.md``;
5. **detect**: export the model (``<out>/model/<method>-<tag>.msgpack``) and score the
   16 real fixture clips of ``../shared/fixtures/realav`` (people and generators absent
   from realtalk) with ``avdetect.detect``, verdict and score next to their manifest
   labels, plus the real-vs-fake AUC on them -> ``<out>/detect/``.

Re-running reuses every finished stage's outputs; an interrupted training resumes from
its last checkpoint. ``--quick`` is the reduced run the test suite uses: a 13-clip subset
of realtalk (picked so that every split holds reals and fakes), four pseudo-fake kinds, a
few training steps, 4 fixture clips. The stage times, the load average and the goal check
are printed at the end and written to ``<out>/demo_summary.json``.
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
import sys
import time
from typing import Any, Callable

from avdetect.errors import AVDetectError

# The demo's recipe: see the config's docstring for what it trains and what it measured.
CONFIG_MODULE = "configs.baseline"
CONFIG_ARG = "tiny,real"
DATASET = "realtalk"
DEMO_CLIP = "real_video-retalking_1.mp4"   # the real fixture clip of stage 2
QUICK_KINDS = ("pf_shift", "pf_swap", "pf_reverse", "pf_freeze")
GOAL_SECONDS = 600.0                # the demo's goal: < 10 minutes on 2 cores ...
GOAL_AUC = {"pf_shift": 0.90, "pf_swap": 0.90, "pf_reverse": 0.90, "pf_tts": 0.80}
RULE = "=" * 88
N_STAGES = 5


@dataclasses.dataclass(frozen=True)
class DemoPlan:
    """What one demo run does (the full demo or ``--quick``)."""

    name: str                       # 'demo' | 'quick'
    config_arg: str                 # get_config argument of CONFIG_MODULE
    kinds: tuple[str, ...]          # build-time pseudo-fake kinds
    quick_clips: int = 0            # > 0: a subset of realtalk of about this many clips
    steps: int | None = None        # training steps (None = the config's)
    fast_compile: bool = False      # config.train.fast_compile (quick runs)
    max_clips: int | None = None    # fixture clips to score (None = all)

    @property
    def tag(self) -> str:
        """Folder name of this plan's data and run: its name and a hash of what it
        builds (another subset or kind list never reuses the outputs of this one)."""
        blob = json.dumps([self.kinds, self.quick_clips], sort_keys=True).encode()
        return f"{self.name}-{hashlib.sha256(blob).hexdigest()[:8]}"

    @property
    def builder_config_name(self) -> str:
        return f"{self.name}_{self.tag.rsplit('-', 1)[1]}"

    @property
    def method(self) -> str:
        return CONFIG_MODULE.rsplit(".", 1)[1]


def make_plan(quick: bool, steps: int | None = None) -> DemoPlan:
    """The full demo plan, or the quick one (see the module docstring)."""
    from avdetect.data import pseudo_fakes
    if quick:
        return DemoPlan(name="quick", config_arg=CONFIG_ARG, kinds=QUICK_KINDS,
                        quick_clips=13, steps=steps or 8, fast_compile=True, max_clips=4)
    return DemoPlan(name="demo", config_arg=CONFIG_ARG, kinds=tuple(pseudo_fakes.ALL_KINDS),
                    steps=steps)


@dataclasses.dataclass(frozen=True)
class Paths:
    """Every output of the demo under ``--out``."""

    out: pathlib.Path
    tag: str
    method: str

    @property
    def source(self) -> pathlib.Path:       # the quick run's realtalk subset (symlinks)
        return self.out / "realtalk_subset" / self.tag

    @property
    def tfds(self) -> pathlib.Path:
        return self.out / "tfds"

    @property
    def preprocess(self) -> pathlib.Path:
        return self.out / "preprocess"

    @property
    def workdir(self) -> pathlib.Path:
        return self.out / "train" / self.tag / self.method

    @property
    def model(self) -> pathlib.Path:
        return self.out / "model" / f"{self.method}-{self.tag}.msgpack"

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
    """The TFDS name of the demo's build (its own builder config: the plan's kinds)."""
    return f"{DATASET}/{plan.builder_config_name}"


# ----------------------------------------------------------------------------------
# Stage 1: build
# ----------------------------------------------------------------------------------

def quick_subset(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    """13 manifest rows such that every split (by the builder's identity rule)
    holds real clips of at least two identities (swap donors) and a fake: train gets the
    most, validation and test enough to choose a threshold and to score."""
    from avdetect.data import splits
    want = {"train": (4, 2), "validation": (2, 1), "test": (2, 2)}   # (reals, fakes)
    picked: list[dict[str, str]] = []
    for split, (n_real, n_fake) in want.items():
        rows_s = [r for r in rows if splits.split_of(r["identity"]) == split]
        reals, seen = [], set()
        for r in rows_s:                      # one clip per identity first
            if r["label"] == "real" and r["identity"] not in seen and len(reals) < n_real:
                reals.append(r)
                seen.add(r["identity"])
        fakes = [r for r in rows_s if r["label"] == "fake"][:n_fake]
        picked += reals + fakes
    return picked


def stage_build(plan: DemoPlan, paths: Paths, workers: int, source: pathlib.Path
                ) -> tuple[dict, bool]:
    """Build the realtalk shards (with the plan's pseudo-fake kinds)."""
    from avdetect.data import build
    from avdetect.data.build import AVBuilderConfig
    from datasets.realtalk import realtalk

    manual = source
    if plan.quick_clips:
        rows = realtalk.read_manifest(source)
        subset = quick_subset(rows)
        manual = paths.source
        manual.mkdir(parents=True, exist_ok=True)
        for r in subset:
            link = manual / r["file"]
            if not link.exists():
                link.symlink_to((source / r["file"]).resolve())
        with open(manual / realtalk.MANIFEST, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(subset)
    cfg = AVBuilderConfig(name=plan.builder_config_name, face_size=112,
                          pseudo_fakes=tuple(plan.kinds),
                          description=f"The demo's build ({plan.name}): pseudo-fakes "
                                      f"{', '.join(plan.kinds)}.")
    name = dataset_name(plan)
    print(f"building {name} from {manual} ({workers} preprocessing worker(s)) -> {paths.tfds}")
    _, report = build.build(DATASET, data_dir=str(paths.tfds), manual_dir=str(manual),
                            workers=workers, builder_kwargs={"config": cfg})
    print(build.format_report(report, max_rows=20))
    return {"dataset": name, "written": report.get("written", {}),
            "skipped": len(report.get("skipped", [])),
            "clips_per_s": report.get("clips_per_s")}, bool(report.get("reused_existing"))


# ----------------------------------------------------------------------------------
# Stage 2: preprocess one real clip
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
# Stages 3 and 4: train, evaluate
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
    return protocols.bind_dataset(config, dataset_name(plan), str(paths.tfds))


def stage_train(plan: DemoPlan, paths: Paths) -> tuple[dict, bool]:
    """Train (or reuse / resume) the demo's run; returns its stored result."""
    from avdetect import protocols

    config = demo_config(plan, paths)
    module = CONFIG_MODULE.replace(".", "/") + ".py"
    print(f"config   {module}:{plan.config_arg}" + (f" (steps={plan.steps})" if plan.steps else ""))
    print(f"data     {config.data.name} under {config.data.data_dir}; window T="
          f"{config.data.window}, batch {config.data.batch_size}, inputs "
          f"{', '.join(config.data.inputs)}; on-the-fly pseudo-fakes "
          f"{dict(config.data.pseudo_fakes)}")
    print(f"training {config.train.steps} steps, lr {config.optim.lr:g} -> {paths.workdir}")
    result, reused = protocols.train_once(config, str(paths.workdir))
    if reused:
        print(f"(a finished run with this config is in {paths.workdir}: reused)")
    return result, reused


def method_aucs(report: dict) -> dict[str, float | None]:
    """Video AUC per method row of a test report (reals vs that method's fakes)."""
    return {m: row.get("auc") for m, row in report["video"].get("per_method", {}).items()}


def stage_evaluate(result: dict, paths: Paths, config_text: str, dataset: str) -> dict:
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
    print(f"test split of {dataset}: identities never seen in training; each row: the test "
          "reals against one method's fakes")
    table = evaluation.report_markdown(test)
    print(table)
    paths.results.parent.mkdir(parents=True, exist_ok=True)
    paths.results.write_text(f"# avdetect demo results\n\nModel: {config_text}\n\n"
                             f"Test split of {dataset} (identities never seen in training)."
                             f"\n\n{table}")
    overall = test["video"]["overall"]
    return {"test_auc": overall["auc"], "n_real": overall.get("n_real"),
            "n_fake": overall.get("n_fake"), "table": str(paths.results),
            "per_method_auc": method_aucs(test),
            "per_method_auc_trimmed": method_aucs(test.get("trimmed", {"video": {}}))}


# ----------------------------------------------------------------------------------
# Stage 5: export and score the real clips
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

    from avdetect import detect, inference
    from avdetect.errors import MediaError

    model = inference.load_model(str(model_path))
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
    print(f"scoring {len(rows)} fixture clips from {fixtures} (labels from its "
          "manifest.csv; realtalk holds none of these people or source repositories)")
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
    print(f"\n{RULE}\n[{index}/{N_STAGES}] {title}\n{RULE}", flush=True)
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


def _default_fixtures() -> pathlib.Path:
    return pathlib.Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "realav"


def goal_check(aucs: dict[str, float | None]) -> dict[str, Any]:
    """Each GOAL_AUC method's test AUC against its bar (None: no such row)."""
    return {m: {"auc": aucs.get(m), "bar": bar,
                "met": aucs.get(m) is not None and aucs[m] >= bar}
            for m, bar in GOAL_AUC.items()}


def run(out: str | os.PathLike, *, quick: bool = False, workers: int | None = None,
        steps: int | None = None, fixtures: str | os.PathLike | None = None,
        realtalk: str | os.PathLike | None = None) -> dict[str, Any]:
    """Runs the demo (see the module docstring); returns the summary it writes."""
    from datasets.realtalk import realtalk as realtalk_builder

    plan = make_plan(quick, steps)
    paths = Paths(pathlib.Path(out).resolve(), plan.tag, plan.method)
    paths.out.mkdir(parents=True, exist_ok=True)
    fixtures_dir = pathlib.Path(fixtures) if fixtures else _default_fixtures()
    source = pathlib.Path(realtalk) if realtalk else realtalk_builder.DEFAULT_DIR
    workers = workers if workers is not None else min(2, os.cpu_count() or 1)
    t_start = time.perf_counter()
    load_start = _load()
    print(f"avdetect demo{' (--quick)' if quick else ''} -> {paths.out}; {load_start}")
    stages: list[StageResult] = []

    _run_stage(1, "Build the realtalk shards (landmarks + aligned crops + log-mel + "
                  "pseudo-fakes)", lambda: stage_build(plan, paths, workers, source),
               stages, "build")
    _run_stage(2, f"Preprocess a real fixture clip ({DEMO_CLIP})",
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
    dataset = dataset_name(plan)
    result = _run_stage(3, f"Train {config_text} on {dataset} (train split)",
                        lambda: stage_train(plan, paths), stages, "train")
    evaluated = _run_stage(4, "Evaluate: test identities, threshold chosen on validation",
                           lambda: (stage_evaluate(result, paths, config_text, dataset), False),
                           stages, "evaluate")
    clips = _run_stage(5, "Export the model and score the real fixture clips",
                       lambda: stage_detect(plan, paths, fixtures_dir, result), stages, "detect")

    total = time.perf_counter() - t_start
    goals = goal_check(evaluated["per_method_auc"])
    summary = {
        "quick": quick, "out": str(paths.out), "dataset": dataset,
        "config": config_text, "steps": result.get("step"),
        "train_seconds": result.get("seconds"),
        "stages": [dataclasses.asdict(s) for s in stages],
        "wall_seconds": round(total, 1), "load_at_start": load_start, "load_at_end": _load(),
        "test_auc": evaluated["test_auc"],
        "test_per_method_auc": evaluated["per_method_auc"],
        "test_per_method_auc_trimmed": evaluated["per_method_auc_trimmed"],
        "realav": clips,
        "goal": {"seconds": GOAL_SECONDS, "met_time": total < GOAL_SECONDS, "auc": goals},
    }
    paths.summary.write_text(json.dumps(summary, indent=1, default=str))
    print(f"\n{RULE}\nSummary\n{RULE}")
    for s in stages:
        print(f"  {s.name:<11s}{s.seconds:8.1f} s{'  (reused)' if s.reused else ''}")
    print(f"  {'total':<11s}{total:8.1f} s   ({load_start} at the start; {_load()} now)")
    auc = evaluated["test_auc"]
    print(f"  realtalk test split ({evaluated['n_real']} real, {evaluated['n_fake']} fake "
          f"videos): AUC " + (f"{auc:.4f}" if auc is not None else "–"))
    for m, g in goals.items():
        a = "–" if g["auc"] is None else f"{g['auc']:.4f}"
        print(f"    {m:<12s} AUC {a}  (bar {g['bar']}: {'met' if g['met'] else 'NOT met'})")
    if clips.get("auc") is not None:
        print(f"  real fixture clips AUC {clips['auc']:.4f} ({clips['n_real']} real, "
              f"{clips['n_fake']} fake)")
    if not quick:
        print(f"  time goal (< {GOAL_SECONDS / 60:.0f} min on 2 cores): "
              f"{'met' if summary['goal']['met_time'] else 'NOT met'}"
              + ("" if not any(s.reused for s in stages) else
                 " (stages were reused: the time is not a fresh run's)"))
    print(f"  outputs: {paths.results}, {paths.detect}, {paths.summary}")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m avdetect.demo",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="demo_out", help="output folder (default demo_out)")
    parser.add_argument("--quick", action="store_true",
                        help="reduced run: a 13-clip realtalk subset, few steps, 4 clips")
    parser.add_argument("--workers", type=int, default=None,
                        help="preprocessing processes (default 2)")
    parser.add_argument("--steps", type=int, default=None, help="override the training steps")
    parser.add_argument("--fixtures", default=None,
                        help="folder of the real fixture clips + manifest.csv "
                             "(default ../shared/fixtures/realav)")
    parser.add_argument("--realtalk", default=None,
                        help="the realtalk folder (default ../shared/realtalk)")
    args = parser.parse_args(argv)
    try:
        run(args.out, quick=args.quick, workers=args.workers, steps=args.steps,
            fixtures=args.fixtures, realtalk=args.realtalk)
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
