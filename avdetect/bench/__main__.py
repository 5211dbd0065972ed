"""The benchmark command: every speed figure the project promises, in one table.

    python -m avdetect.bench [--tiny] [--only preprocess,loader,train,devices,peer,detect]
                             [--json FILE]
    make bench

Sections (each in its own process, so peak memory is per section):

  preprocess  decode + face track + crops + log-mel vs pure decoding (goal >= 0.5)
  loader      dataset build, then Grain loader examples/s; divided by the train step's
              examples/s at the same window (goal >= 5x)
  train       train step examples/s per method and config (the trainer's own step on
              random data of the contract's shapes)
  devices     the tiny correlation-distillation step on 1/2/4/8 simulated CPU devices
  peer        our student vs the torch reference student (avdetect.bench.torch_ref), each
              in its own process, same shapes / threads, in the same run: speed ratios
              (train step >= 1x, 10 s inference >= 2x) and training peak RSS (<= 1x)
  detect      `avdetect detect` on a 10-second clip, default inference config
              (goal <= 2 s on 2 cores), cold and warm compile cache, per-stage times

Extra sections, run only when named in --only (their own printed output is passed
through): ``model`` (parameters / FLOPs, ``avdetect.bench.model_bench``), ``generator``
(``datasets.synthetic_av.bench``), ``teachers`` (``avdetect.teachers.bench``).

``--tiny`` runs the default sections but ``peer`` at CI size (seconds, not minutes) to
check that the command works; its figures are printed, never asserted. Goals are judged
on the full run. Record the table in BENCHMARKS.md with the machine line printed above it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time

from avdetect.bench import common
from avdetect.bench.common import Figure, SectionRun

SECTIONS = ("preprocess", "loader", "train", "devices", "peer", "detect")
EXTRAS = {"model": ["-m", "avdetect.bench.model_bench", "--configs", "tiny"],
          "generator": ["-m", "datasets.synthetic_av.bench"],
          "teachers": ["-m", "avdetect.teachers.bench"]}
DEVICE_COUNTS = (1, 2, 4, 8)


def plan(sections: list[str], tiny: bool) -> list[tuple[str, list[str], dict[str, str]]]:
    """(run name, python argv, extra environment) for every process to start."""
    t = ["--tiny"] if tiny else []
    runs = []
    for s in sections:
        if s == "preprocess":
            runs.append((s, ["-m", "avdetect.bench.preprocess_bench", *t], {}))
        elif s == "loader":
            runs.append((s, ["-m", "avdetect.bench.train_bench", "--loader", *t], {}))
        elif s == "train":
            if tiny and "devices" in sections:
                continue          # CI size: the 2-device run below covers the same step
            argv = ["-m", "avdetect.bench.train_bench"]
            argv += (["--methods", "corrdistill", "--configs", "tiny", "--steps", "2",
                      "--warmup", "1", "--fast_compile"] if tiny else [])
            runs.append((s, argv, {}))
        elif s == "devices":
            for n in ((2,) if tiny else DEVICE_COUNTS):
                argv = ["-m", "avdetect.bench.train_bench", "--methods", "corrdistill",
                        "--configs", "tiny", "--devices", str(n)]
                argv += ["--steps", "2", "--warmup", "1", "--fast_compile"] if tiny else []
                runs.append((f"devices={n}", argv, {
                    "XLA_FLAGS": f"--xla_force_host_platform_device_count={n}"}))
        elif s == "peer":
            runs.append((s, ["-m", "avdetect.bench.peer_bench",
                             *(["--tiny", "--steps", "1", "--warmup", "1"] if tiny else [])],
                         {}))
        elif s == "detect":
            runs.append((s, ["-m", "avdetect.bench.detect_bench", *t], {}))
        elif s in EXTRAS:
            runs.append((s, list(EXTRAS[s]), {}))
        else:
            raise SystemExit(f"unknown section {s!r}; known: {', '.join(SECTIONS + tuple(EXTRAS))}")
    return runs


def _train_rate(figures: list[Figure], window: int, variant: str) -> Figure | None:
    """The corrdistill train-step figure of ``variant`` at T = ``window``: the plain
    1-device run if there is one, else the run on the fewest simulated devices."""
    prefix = f"train step corrdistill:{variant}"
    found = [f for f in figures if f.section == "train" and f.note.startswith("B=")
             and f"x T={window}:" in f.note
             and (f.name == prefix or f.name.startswith(prefix + " on "))]

    def devices(f: Figure) -> int:
        return 1 if f.name == prefix else int(f.name[len(prefix) + 4:].split()[0])

    return min(found, key=lambda f: (devices(f), f.name != prefix), default=None)


def loader_ratios(figures: list[Figure]) -> list[Figure]:
    """Loader examples/s over the train step's examples/s at the same window (the step
    consumes; the loader must keep ahead of it)."""
    out = []
    for f in figures:
        if f.section != "loader" or not f.name.startswith("loader T="):
            continue
        window = int(f.name.split("T=")[1].split(",")[0])
        for variant in ("tiny", "full"):
            step = _train_rate(figures, window, variant)
            if step is None:
                continue
            ratio = f.value / step.value
            out.append(Figure("loader", f"{f.name.replace('loader ', 'loader / train step ')}"
                              f" vs corrdistill:{variant}", ratio, "x", f">= {5:g}x",
                              common.goal_at_least(ratio, 5.0),
                              f"{f.value:.1f} ex/s loader vs {step.value:.2f} ex/s step"))
    return out


def _cell(text: str) -> str:
    return text.replace("|", "/").replace("\n", " ")


def format_tables(runs: list[SectionRun], figures: list[Figure], info: dict) -> str:
    lines = [f"machine: {info['cpu']}, {info['cores']} cores, {info['memory_gib']} GiB; "
             f"python {info['python']}; commit {info['commit']}; {info['date']}; "
             f"load average at start {info['load'][0]:.1f}, at end {info['load_end'][0]:.1f}",
             "",
             "| section | measurement | value | goal | status | notes |",
             "|---|---|---|---|---|---|"]
    for f in figures:
        status = "" if f.ok is None else ("met" if f.ok else "**missed**")
        lines.append(f"| {f.section} | {_cell(f.name)} | {f.formatted()} | {_cell(f.goal)} | "
                     f"{status} | {_cell(f.note)} |")
    lines += ["", "| process | wall | CPU | peak RSS | exit |", "|---|---|---|---|---|"]
    for r in runs:
        lines.append(f"| {r.name} | {r.wall_s:.1f} s | {r.cpu_s:.1f} s | "
                     f"{common.fmt_bytes(r.peak_rss)} | {r.returncode} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m avdetect.bench",
                                 description=__doc__.split("\n\n")[0],
                                 epilog="Sections: " + ", ".join(SECTIONS)
                                 + "; extras: " + ", ".join(EXTRAS))
    ap.add_argument("--tiny", action="store_true",
                    help="CI size: every section in seconds (figures printed, not judged)")
    ap.add_argument("--only", default=None,
                    help="comma-separated sections (default: all but the extras; with "
                         "--tiny also without 'peer', whose full-size compile alone takes "
                         "a minute)")
    ap.add_argument("--json", metavar="FILE", help="also write machine, figures and runs here")
    ap.add_argument("--quiet", action="store_true", help="do not pass section progress through")
    args = ap.parse_args(argv)
    if args.only is None:
        sections = [s for s in SECTIONS if not (args.tiny and s == "peer")]
    else:
        sections = [s.strip() for s in args.only.split(",") if s.strip()]
    runs_plan = plan(sections, args.tiny)
    info = common.machine()
    print(f"avdetect bench{' (tiny)' if args.tiny else ''}: {len(runs_plan)} process(es); "
          f"{common.load_text()}", file=sys.stderr, flush=True)
    runs: list[SectionRun] = []
    figures: list[Figure] = []
    from tqdm import tqdm
    bar = tqdm(runs_plan, desc="bench", unit="section", file=sys.stderr, disable=None)
    for name, argv_, env in bar:
        bar.set_postfix_str(name)
        t0 = time.perf_counter()
        run = common.run_section(name, argv_, env=env, echo=not args.quiet)
        runs.append(run)
        figures.extend(run.figures)
        if run.returncode != 0:
            tqdm.write(f"section {name} FAILED (exit {run.returncode}) after "
                       f"{time.perf_counter() - t0:.0f} s:\n{run.stderr_tail}", file=sys.stderr)
    bar.close()
    figures.extend(loader_ratios(figures))
    order = {s: i for i, s in enumerate(SECTIONS)}
    figures.sort(key=lambda f: order.get(f.section, len(order)))   # stable within a section
    info["load_end"] = common.machine()["load"]
    print(format_tables(runs, figures, info))
    for r in runs:
        if r.name in EXTRAS and r.text.strip():
            print(f"\n{r.name} (its own output):\n{r.text.rstrip()}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "tiny": args.tiny,
                       "figures": [dataclasses.asdict(x) for x in figures],
                       "runs": [{k: v for k, v in dataclasses.asdict(r).items()
                                 if k not in ("figures", "stderr_tail", "text")}
                                for r in runs]},
                      f, indent=1)
    failed = [r.name for r in runs if r.returncode != 0]
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
