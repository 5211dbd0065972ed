r"""Evaluation protocols: leave-one-method-out (LOMO) and cross-dataset runs.

Leave-one-method-out, for every manipulation m of the dataset (a fake entry of its
``method`` vocabulary: "method" there means how a fake was made, README's glossary): train
with ``config.data.train_exclude_manipulations = (m,)`` and evaluate on the test split. The test
report's per-manipulation breakdown row for m (all real test videos + the test fakes of m,
``avdetect.evaluation.breakdown``) is then exactly the held-out number: a model that never
saw m, scored on m's fakes against the reals. The synthetic benchmark has no per-manipulation
test splits, so this filter-by-breakdown is how m's test clips are selected::

    python -m avdetect.protocols lomo --config=configs/corrdistill.py:tiny \
        --data=synthetic_av/demo_oracle --data_dir=demo_out/tfds --workdir=/tmp/lomo
    python -m avdetect.protocols lomo \
        --configs=configs/baseline.py:tiny,configs/corrdistill.py:tiny,configs/cad.py:tiny \
        --data=synthetic_av/demo_oracle --data_dir=demo_out/tfds --workdir=/tmp/lomo \
        [--manipulations=lipsync,voiceclone] [--steps=150]

Cross-dataset: train once on ``--train`` (its 'train' split; the decision threshold is
chosen on its 'validation' split), then evaluate every ``--test`` split::

    python -m avdetect.protocols cross --config=configs/corrdistill.py \
        --train=fakeavceleb/face112 --test=cmdfd/face112:w2l,cmdfd/face112:vrt \
        --data_dir=~/tensorflow_datasets --workdir=/tmp/cross

A test is ``NAME[/CONFIG]:SPLIT`` (the split defaults to 'test'). Several configs
(``--configs=a,b,c``) give one table with a column per config. Every run has its own
workdir (``<workdir>/<config label>/...``); a finished run is reused when the command is
repeated (``result.json`` beside its checkpoints), an interrupted one resumes from its
last checkpoint. The table is printed as Markdown and written to
``<workdir>/<mode>.md`` and ``<workdir>/<mode>.json``.

Numbers: video-level AUC (threshold-free, the protocol's headline), with AP, EER and the
accuracy at the threshold chosen on the training dataset's validation split in the JSON.
In LOMO that validation split still holds m's fakes (the split is fixed at build time):
AUC and AP are unaffected, ACC's threshold has seen m's score range. With
``config.eval.trim_silence`` (on in every shipped config) each config also gets a
'(trimmed)' column: the same AUC with each test video's leading/trailing digital silence
trimmed (``avdetect.evaluation``), so a silence shortcut shows as the gap between the two.

Teacher posteriors: a method reading ``teacher_audio``/``teacher_video`` gets
``config.model.teacher_classes`` set to the dataset's stored teacher dimension
(:func:`bind_dataset`), so one config works on datasets built with different teachers
(the synthetic oracle's 14 visemes, the deep_avsr 40 characters).

Config specs, overrides and binding a config to a built dataset live in
:mod:`avdetect.config_specs`.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import re
import sys
import time
from typing import Any, Callable, Sequence

import ml_collections

from avdetect.config_specs import (apply_overrides, bind_dataset, config_label, folder_name,
                                   load_config)
from avdetect.errors import AVDetectError, ConfigError

MODES = ("lomo", "cross")
REAL_MANIPULATION = "real"     # the manipulation name of real clips
RESULT_FILE = "result.json"
METRICS = ("auc", "ap", "eer", "acc", "bacc", "n_real", "n_fake")
TRIMMED_METRICS = ("auc", "ap", "eer")   # also reported with digital silence trimmed
TRIMMED = "_trimmed"


def fake_manipulations(name: str, data_dir: str | None) -> tuple[str, ...]:
    """The dataset's manipulations (its ``method_names`` vocabulary) other than 'real'."""
    from avdetect.data import metadata
    return tuple(m for m in metadata.method_names(name, data_dir) if m != REAL_MANIPULATION)


def parse_test(spec: str) -> tuple[str, str]:
    """``'NAME[/CONFIG][:VERSION][:SPLIT]'`` -> (dataset name with its version, split;
    default 'test'); a last part of digits and dots is the version, not a split."""
    spec = spec.strip()
    name, sep, split = spec.rpartition(":")
    if not sep:
        name, split = split, ""
    elif re.fullmatch(r"\d+(\.\d+)*", split):
        name, split = spec, ""
    if not name:
        raise ConfigError(f"test {spec!r}: expected NAME[/CONFIG]:SPLIT")
    return name, split or "test"


# ----------------------------------------------------------------------------------
# Runs
# ----------------------------------------------------------------------------------

def _metrics(m: dict[str, Any], trimmed: dict[str, Any] | None = None) -> dict[str, Any]:
    """The table's metrics of one report row, with ``<metric>_trimmed`` from the same row
    of the report's silence-trimmed view when it has one (config.eval.trim_silence)."""
    out = {k: m.get(k) for k in METRICS}
    if trimmed is not None:
        out.update({f"{k}{TRIMMED}": trimmed.get(k) for k in TRIMMED_METRICS})
    return out


def _trimmed_section(report: dict[str, Any], *path: str) -> dict[str, Any] | None:
    """``report['trimmed'][path...]`` or None (a report without the trimmed view)."""
    node = report.get("trimmed")
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def _config_key(config: ml_collections.ConfigDict) -> str:
    return config.to_json_best_effort(sort_keys=True)


def _finished(workdir: str, config: ml_collections.ConfigDict) -> dict | None:
    """The stored result of a finished run with this very config, else None."""
    path = os.path.join(workdir, RESULT_FILE)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        stored = json.load(f)
    return stored if stored.get("config") == _config_key(config) else None


def _save_result(workdir: str, config: ml_collections.ConfigDict, result: dict) -> dict:
    result = {**result, "config": _config_key(config)}
    tmp = os.path.join(workdir, RESULT_FILE + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
    os.replace(tmp, os.path.join(workdir, RESULT_FILE))
    return result


def train_once(config: ml_collections.ConfigDict, workdir: str) -> tuple[dict, bool]:
    """Train + evaluate ``config`` in ``workdir`` unless a finished result for the same
    config is there: ``({'reports': {split: report}, 'seconds': s}, reused)``."""
    from avdetect import train
    done = _finished(workdir, config)
    if done is not None:
        return done, True
    t0 = time.perf_counter()
    out = train.train_and_evaluate(config, workdir)
    return _save_result(workdir, config, {"reports": out["eval"], "step": out["step"],
                                          "seconds": round(time.perf_counter() - t0, 1)}), False


def lomo_runs(config: ml_collections.ConfigDict, workdir: str, manipulations: Sequence[str],
              log=print) -> dict[str, dict[str, Any]]:
    """One training per held-out manipulation; ``{manipulation: metrics of its breakdown row on the
    test split, plus 'seconds', 'reused', 'workdir'}``."""
    split = config.data.eval_split
    out = {}
    for i, m in enumerate(manipulations):
        cfg = copy.deepcopy(config)
        cfg.data.train_exclude_manipulations = (m,)
        wd = os.path.join(workdir, f"holdout_{folder_name(m)}")
        log(f"  [{i + 1}/{len(manipulations)}] hold out {m!r}: train without it -> {wd}")
        result, reused = train_once(cfg, wd)
        rows = result["reports"][split]["video"].get("per_method", {})
        if m not in rows:
            raise ConfigError(f"split {split!r} of {config.data.name} has no test fakes of "
                              f"manipulation {m!r}: nothing to evaluate it on")
        trimmed = _trimmed_section(result["reports"][split], "video", "per_method", m)
        out[m] = {**_metrics(rows[m], trimmed), "seconds": result.get("seconds"),
                  "reused": reused, "workdir": wd}
        log(f"      {m}: AUC {_fmt(out[m]['auc'])} ({out[m]['n_real']} real, "
            f"{out[m]['n_fake']} fake test videos){' (reused)' if reused else ''}")
    return out


def cross_runs(config: ml_collections.ConfigDict, workdir: str, tests: Sequence[str],
               data_dir: str | None, log=print) -> dict[str, dict[str, Any]]:
    """Train once on the config's dataset, evaluate every test ``NAME:SPLIT`` at the
    threshold chosen on the training dataset's validation split."""
    result, reused = train_once(config, workdir)
    log(f"  trained on {config.data.name}{' (reused)' if reused else ''}: {workdir}")
    done = result.get("cross", {})
    pending = [t for t in tests if t not in done]
    if pending:
        done.update(evaluate_tests(config, workdir, pending, data_dir))
        result["cross"] = done
        _save_result(workdir, config, result)
    out = {}
    for t in tests:
        out[t] = {**_metrics(done[t]["video"]["overall"],
                             _trimmed_section(done[t], "video", "overall")),
                  "workdir": workdir, "threshold": done[t]["threshold"]["value"]}
        log(f"      {t}: AUC {_fmt(out[t]['auc'])}")
    return out


def evaluate_tests(config: ml_collections.ConfigDict, workdir: str, tests: Sequence[str],
                   data_dir: str | None) -> dict[str, dict]:
    """Reports of the latest checkpoint in ``workdir`` on every test ``NAME:SPLIT``
    (written as ``<workdir>/cross/eval_<name>_<split>.json/.md``)."""
    import jax
    from avdetect import checkpointing, evaluation, sharding
    from avdetect.evaluators import add_phone_stats, predict_split
    from avdetect.input_pipeline import label_vocabularies, make_eval_iterator
    from avdetect.methods import build_method
    from avdetect.steps import Steps

    mesh = sharding.make_mesh(config.get("mesh", None) or [("data", -1)])
    # The threshold: the training run's own validation report (the trainer chose it).
    val_split = config.data.get("val_split", None)
    val_path = os.path.join(workdir, f"eval_{val_split}.json") if val_split else ""
    val_report = None
    if val_path and os.path.isfile(val_path):
        with open(val_path, encoding="utf-8") as f:
            val_report = json.load(f)
        thr = val_report["threshold"]
        threshold, source = float(thr["value"]), thr["source"]
    else:
        threshold = float(config.get("eval", {}).get("fixed_threshold", 0.5))
        source = "fixed (config.eval.fixed_threshold; the training run has no validation report)"
    # ... and its clip-score weights, where they were fitted at evaluation.
    try:
        clip = evaluation.ClipScore.from_config(config).with_report(val_report, val_path)
    except ValueError as e:
        raise ConfigError(str(e)) from e
    directory, step = checkpointing.resolve_checkpoint(None, os.path.join(workdir, "checkpoints"))
    reports, steps, state = {}, None, None
    for t in tests:
        name, split = parse_test(t)
        cfg = bind_dataset(config, name, data_dir, for_training=False)
        cfg.data.eval_split = split
        if steps is None:   # one model for every test (the streams' shapes are shared)
            example = next(make_eval_iterator(cfg, mesh, split))
            steps = Steps(cfg, build_method(cfg), mesh,
                                sharding.host_to_global(example, mesh), train=False)
            with checkpointing.Checkpointer(directory, read_only=True, asynchronous=False) as ck:
                state = ck.restore_state(step, steps.abstract_state)
        records = add_phone_stats(predict_split(steps, state, cfg, split, desc=f"eval {t}"),
                                  cfg, split, clip)
        cats, methods = label_vocabularies(cfg)
        rep = evaluation.evaluate_records(records, threshold=threshold, threshold_source=source,
                                          split=split, category_names=cats, method_names=methods,
                                          clip_score=clip)
        rep["dataset"] = name
        rep["checkpoint"] = {"directory": directory, "step": step}
        if jax.process_index() == 0:
            evaluation.write_report(rep, os.path.join(workdir, "cross"),
                                    name=f"eval_{folder_name(name)}_{folder_name(split)}")
        reports[t] = rep
    return reports


# ----------------------------------------------------------------------------------
# Tables
# ----------------------------------------------------------------------------------

def _fmt(x: Any) -> str:
    return "–" if x is None else f"{x:.4f}" if isinstance(x, float) else str(x)


def markdown_table(results: dict[str, dict[str, dict[str, Any]]], *, row_title: str,
                   metric: str = "auc") -> str:
    """``results[config label][row] -> metrics`` as a Markdown table: a row per held-out
    manipulation / test split, a column per config, cells = ``metric``; a last row with the
    mean over rows. A config whose rows carry ``<metric>_trimmed`` (the silence-trimmed
    view) gets a second column '<label> (trimmed)' beside its own."""
    labels = list(results)
    rows = list(dict.fromkeys(r for lab in labels for r in results[lab]))
    columns = []                                  # (header, label, key)
    for lab in labels:
        columns.append((lab, lab, metric))
        if any(v.get(metric + TRIMMED) is not None for v in results[lab].values()):
            columns.append((f"{lab} (trimmed)", lab, metric + TRIMMED))
    lines = [f"| {row_title} | " + " | ".join(h for h, _, _ in columns) + " |",
             "|---|" + "---|" * len(columns)]
    for r in rows:
        counts = next((f" ({results[lab][r]['n_real']}+{results[lab][r]['n_fake']})"
                       for lab in labels if r in results[lab]), "")
        cells = [_fmt(results[lab].get(r, {}).get(key)) for _, lab, key in columns]
        lines.append(f"| {r}{counts} | " + " | ".join(cells) + " |")
    means = []
    for _, lab, key in columns:
        vals = [v[key] for v in results[lab].values() if v.get(key) is not None]
        means.append(_fmt(sum(vals) / len(vals)) if vals else "–")
    lines.append("| mean | " + " | ".join(means) + " |")
    return "\n".join(lines) + "\n"


def write_outputs(workdir: str, mode: str, payload: dict, table: str) -> tuple[str, str]:
    os.makedirs(workdir, exist_ok=True)
    base = os.path.join(workdir, mode)
    with open(base + ".json", "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=1)
    with open(base + ".md", "w", encoding="utf-8") as f:
        f.write(table)
    return base + ".json", base + ".md"


# ----------------------------------------------------------------------------------
# Command
# ----------------------------------------------------------------------------------

@dataclasses.dataclass
class ProtocolArgs:
    mode: str
    configs: list[str]
    workdir: str
    data: str | None = None
    data_dir: str | None = None
    manipulations: list[str] | None = None   # lomo: held out ones (None: every fake one)
    train_data: str | None = None
    tests: list[str] | None = None
    steps: int | None = None
    overrides: list[str] = dataclasses.field(default_factory=list)


def _split_list(text: str | None) -> list[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]


def _configs_arg(items: Sequence[str]) -> list[str]:
    """``--configs a.py:tiny,b.py:tiny`` -> specs; a comma inside a config argument
    ('a.py:tiny,steps=5') stays with its spec (a new spec starts with a path)."""
    out: list[str] = []
    for item in items:
        for part in item.split(","):
            part = part.strip()
            if not part:
                continue
            if out and ".py" not in part.partition(":")[0]:
                out[-1] += "," + part      # 'steps=5' continues the previous spec's argument
            else:
                out.append(part)
    return out


def prepare_config(spec: str, args: ProtocolArgs, data: str) -> ml_collections.ConfigDict:
    """The config of one column: loaded, overridden, bound to ``data``."""
    config = apply_overrides(load_config(spec), args.overrides)
    if args.steps:
        config.train.steps = int(args.steps)
    return bind_dataset(config, data, args.data_dir)


def run(args: ProtocolArgs, log=print) -> dict[str, Any]:
    """Run a protocol; returns ``{'mode', 'table' (Markdown), 'results', 'paths'}``."""
    if args.mode not in MODES:
        raise ConfigError(f"unknown protocol {args.mode!r}; use one of {MODES}")
    if not args.configs:
        raise ConfigError("give --config or --configs")
    workdir = os.path.abspath(os.path.expanduser(args.workdir))
    results: dict[str, dict[str, dict[str, Any]]] = {}
    t0 = time.perf_counter()
    if args.mode == "lomo":
        if not args.data:
            raise ConfigError("lomo needs --data (the dataset to train and test on)")
        available = fake_manipulations(args.data, args.data_dir)
        held_out = list(args.manipulations or available)
        unknown = sorted(set(held_out) - set(available))
        if unknown:
            raise ConfigError(f"--manipulations {unknown} are not manipulations of {args.data} "
                              f"(it has {list(available)})")
        for spec in args.configs:
            label = config_label(spec)
            log(f"LOMO {label} on {args.data}: {len(held_out)} held-out manipulations")
            config = prepare_config(spec, args, args.data)
            results[label] = lomo_runs(config, os.path.join(workdir, folder_name(label)),
                                       held_out, log)
        title = (f"Leave-one-method-out on `{args.data}` (video AUC on the test split: all "
                 "real videos + the held-out manipulation's fakes; (#real+#fake))")
        table = f"{title}\n\n" + markdown_table(results, row_title="held-out manipulation")
    else:
        if not args.train_data or not args.tests:
            raise ConfigError("cross needs --train and --test")
        for spec in args.configs:
            label = config_label(spec)
            log(f"cross-dataset {label}: train on {args.train_data}, test on "
                f"{', '.join(args.tests)}")
            config = prepare_config(spec, args, args.train_data)
            results[label] = cross_runs(config, os.path.join(workdir, folder_name(label)),
                                        args.tests, args.data_dir, log)
        title = (f"Cross-dataset: trained on `{args.train_data}`, video AUC on each test split "
                 "(#real+#fake)")
        table = f"{title}\n\n" + markdown_table(results, row_title="test split")
    payload = {"mode": args.mode, "data": args.data, "train": args.train_data,
               "tests": args.tests, "configs": args.configs, "overrides": args.overrides,
               "steps": args.steps, "seconds": round(time.perf_counter() - t0, 1),
               "results": results}
    paths = write_outputs(workdir, args.mode, payload, table)
    return {"mode": args.mode, "table": table, "results": results, "paths": paths}


def parse_args(argv: Sequence[str] | None = None) -> ProtocolArgs:
    p = argparse.ArgumentParser(prog="python -m avdetect.protocols",
                                description="Leave-one-method-out and cross-dataset runs.")
    p.add_argument("mode", choices=MODES)
    p.add_argument("--config", action="append", default=[],
                   help="configs/<m>.py[:arg] (repeatable)")
    p.add_argument("--configs", action="append", default=[],
                   help="comma-separated config specs: one table column each")
    p.add_argument("--workdir", required=True, help="folder of every run and the tables")
    p.add_argument("--data", help="lomo: dataset NAME[/CONFIG] to train and test on")
    p.add_argument("--data_dir", default=None, help="TFDS data dir of the datasets")
    p.add_argument("--manipulations", "--methods", dest="manipulations", default=None,
                   help="lomo: comma-separated manipulations (the dataset's fake 'method' "
                   "names) to hold out (default: every fake one; --methods is the older "
                   "spelling)")
    p.add_argument("--train", dest="train_data", help="cross: dataset NAME[/CONFIG] to train on")
    p.add_argument("--test", dest="tests", default=None,
                   help="cross: comma-separated NAME[/CONFIG]:SPLIT to evaluate")
    p.add_argument("--steps", type=int, default=None, help="override config.train.steps")
    p.add_argument("--set", dest="overrides", action="append", default=[],
                   metavar="KEY=VALUE", help="config override for every config, e.g. "
                   "--set optim.lr=3e-4 (repeatable; existing keys only)")
    a = p.parse_args(argv)
    return ProtocolArgs(mode=a.mode, configs=_configs_arg(a.config + a.configs),
                        workdir=a.workdir, data=a.data, data_dir=a.data_dir,
                        manipulations=_split_list(a.manipulations) or None,
                        train_data=a.train_data,
                        tests=_split_list(a.tests) or None, steps=a.steps,
                        overrides=list(a.overrides))


def run_command(run_fn: Callable[[], dict[str, Any]]) -> int:
    """The shared tail of the protocol commands (this module's and :mod:`avdetect.loso`'s):
    absl flags marked parsed (Grain workers read them), quiet library logging, the XLA
    compile cache; then ``run_fn()`` and its table and files printed, or the error (exit 2)."""
    from absl import flags, logging
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()        # Grain workers read absl flags
    logging.set_verbosity(logging.WARNING)  # the protocol prints its own progress
    from avdetect import cli
    cli.enable_compile_cache()              # every run of a config compiles the same steps
    try:
        out = run_fn()
    except AVDetectError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print()
    print(out["table"])
    print(f"written: {out['paths'][0]}, {out['paths'][1]}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(lambda: run(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
