"""The demo's plan and its five stages (:mod:`avdetect.demo` runs them and is the command):
what one run builds, trains and scores (:class:`DemoPlan`, :func:`make_plan`), where its
outputs go (:class:`Paths`), and each stage as a function returning ``(info, reused)``.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import pathlib
from typing import Any

# The demo's recipe: see the config's docstring for what it trains and what it measured.
CONFIG_MODULE = "configs.baseline"
CONFIG_ARG = "tiny,real,refit"   # the final fit: train + validation people (METHODS.md 8)
DATASET = "realtalk"
DEMO_CLIP = "real_video-retalking_1.mp4"   # the real fixture clip of stage 2
QUICK_KINDS = ("pf_shift", "pf_swap", "pf_reverse", "pf_freeze")
GOAL_SECONDS = 600.0                # the demo's goal: < 10 minutes on 2 cores ...
GOAL_AUC = {"pf_shift": 0.90, "pf_swap": 0.90, "pf_reverse": 0.90, "pf_tts": 0.80}


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
    from avdetect.data.builder import AVBuilderConfig, format_report
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
    print(format_report(report, max_rows=20))
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

    from avdetect import config_specs
    config = importlib.import_module(CONFIG_MODULE).get_config(plan.config_arg)
    if plan.steps:
        config.train.steps = int(plan.steps)
    if plan.fast_compile:
        config.train.fast_compile = True
    return config_specs.bind_dataset(config, dataset_name(plan), str(paths.tfds))


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


def manipulation_aucs(report: dict) -> dict[str, float | None]:
    """Video AUC per manipulation row of a test report (reals vs that manipulation's
    fakes; the report's stored key is ``per_method``)."""
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
          "reals against one manipulation's fakes")
    table = evaluation.report_markdown(test)
    print(table)
    paths.results.parent.mkdir(parents=True, exist_ok=True)
    paths.results.write_text(f"# avdetect demo results\n\nModel: {config_text}\n\n"
                             f"Test split of {dataset} (identities never seen in training)."
                             f"\n\n{table}")
    overall = test["video"]["overall"]
    return {"test_auc": overall["auc"], "n_real": overall.get("n_real"),
            "n_fake": overall.get("n_fake"), "table": str(paths.results),
            "per_method_auc": manipulation_aucs(test),
            "per_method_auc_trimmed": manipulation_aucs(test.get("trimmed", {"video": {}}))}


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
