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
3. **train** the real-footage recipe's final fit (``CONFIG``: see that config's
   docstring; config argument ``refit``) on the train and validation splits - every
   person outside the test split - with on-the-fly audio pseudo-fakes of its real windows
   (workdir ``<out>/train/<tag>/<method>``);
4. **evaluate** on the test split - identities never seen in training: the decision
   threshold placed on the validation split's scores (clips the refit trained on, so the
   accuracies at it are indicative; the AUCs do not depend on it), the per-manipulation
   table (reals, the pseudo-fakes of the test reals, realtalk's generated fakes; every
   row says how many clips it holds), also with leading/trailing digital silence
   trimmed -> ``<out>/results.md``;
5. **detect**: export the model (``<out>/model/<method>-<tag>.msgpack``) and score the
   16 real fixture clips of ``../shared/fixtures/realav`` (people and generators absent
   from realtalk) with ``avdetect.detect``, verdict and score next to their manifest
   labels, plus the real-vs-fake AUC on them -> ``<out>/detect/``.

Re-running reuses every finished stage's outputs; an interrupted training resumes from
its last checkpoint. ``--quick`` is the reduced run the test suite uses: a 13-clip subset
of realtalk (picked so that every split holds reals and fakes), four pseudo-fake kinds, a
few training steps, 4 fixture clips. The stage times, the load average and the goal check
are printed at the end and written to ``<out>/demo_summary.json``.

This module is the driver and the command line; the plan and the stages themselves are in
:mod:`avdetect.demo_stages`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging as std_logging
import os
import pathlib
import sys
import time
from typing import Any, Callable

from avdetect.demo_stages import (CONFIG_MODULE, DEMO_CLIP, GOAL_AUC, GOAL_SECONDS, Paths,
                                  dataset_name, demo_config, make_plan, stage_build,
                                  stage_detect, stage_evaluate, stage_preprocess, stage_train)
from avdetect.errors import AVDetectError

RULE = "=" * 88
N_STAGES = 5


@dataclasses.dataclass
class StageResult:
    name: str
    seconds: float
    reused: bool
    info: dict[str, Any]


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
    """Each GOAL_AUC manipulation's test AUC against its bar (None: no such row)."""
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
    train_split = demo_config(plan, paths).data.train_split
    result = _run_stage(3, f"Train {config_text} on {dataset} ({train_split})",
                        lambda: stage_train(plan, paths), stages, "train")
    evaluated = _run_stage(4, "Evaluate: test identities, threshold from the validation split",
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
