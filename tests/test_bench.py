"""The benchmark command (`python -m avdetect.bench`) and its measuring machinery.

The tiny run checks that every default section runs end to end and prints its figures
(printed here too; speed is never asserted). The machinery is checked against
independent references: a child that allocates a known number of bytes and reports its
own ru_maxrss, a child that sleeps a known time, figures that round-trip through the
section protocol, and loader/step ratios computed by hand.
"""

from __future__ import annotations

import json
import math
import pathlib
import subprocess
import sys
import textwrap
import time

import pytest

from avdetect.bench import __main__ as bench_main
from avdetect.bench import common

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_tiny_benchmark_command_runs_every_section(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "avdetect.bench", "--tiny", "--quiet",
                           "--json", str(out)], cwd=REPO, capture_output=True, text=True,
                          timeout=600)
    print(proc.stdout)                       # the figures, for the log (never asserted)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    runs = {r["name"]: r for r in doc["runs"]}
    assert set(runs) == {"preprocess", "loader", "devices=2", "detect"}
    assert all(r["returncode"] == 0 and r["peak_rss"] > 50 * 2**20 for r in runs.values())
    sections = {f["section"] for f in doc["figures"]}
    assert sections == {"preprocess", "loader", "train", "detect"}
    for f in doc["figures"]:
        assert math.isfinite(f["value"]) and f["value"] > 0, f
        # every figure is a row of the printed table
        assert f"| {f['section']} | {f['name']} |" in proc.stdout
    names = [f["name"] for f in doc["figures"]]
    assert any(n.startswith("loader / train step T=25") for n in names)   # the joined ratio
    assert "| process | wall | CPU | peak RSS | exit |" in proc.stdout
    assert doc["machine"]["cores"] >= 1 and doc["machine"]["date"]


def test_section_peak_rss_and_figures_come_from_the_child(tmp_path):
    # The child allocates (and touches) 300 MiB, then reports its own ru_maxrss as a
    # figure: the parent's os.wait4 figure must agree with it.
    code = textwrap.dedent("""
        import resource
        import numpy as np
        from avdetect.bench.common import Figure, emit
        a = np.ones(300 * 2**20 // 8)
        emit(Figure("t", "own peak RSS", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                    * 1024, "B", ">= 1", True, "note | with a pipe"))
        emit(Figure("t", "nan figure", float("nan"), "s"))
    """)
    run = common.run_section("alloc", ["-c", code], echo=False)
    assert run.returncode == 0, run.stderr_tail
    own, nan_fig = run.figures
    assert own.name == "own peak RSS" and own.ok is True and own.note == "note | with a pipe"
    assert run.peak_rss >= 300 * 2**20
    assert abs(run.peak_rss - own.value) < 16 * 2**20
    assert math.isnan(nan_fig.value) and nan_fig.formatted() == "n/a"


def test_failing_section_is_reported_not_raised():
    run = common.run_section("boom", ["-c", "import sys; print('bad', file=sys.stderr); "
                                             "sys.exit(3)"], echo=False)
    assert run.returncode == 3 and run.figures == [] and "bad" in run.stderr_tail


def test_best_of_times_a_known_sleep():
    calls = []

    def nap():
        calls.append(1)
        time.sleep(0.05)
        return len(calls)

    t = common.best_of(nap, repeats=3, warmup=1)
    assert len(calls) == 4 and t.result in (2, 3, 4)
    assert 0.05 <= t.wall <= t.median_wall
    assert t.cpu < 0.05                      # sleeping costs no CPU

    naps = iter([0.12, 0.01, 0.08])            # the result is the fastest call's

    def uneven():
        d = next(naps)
        time.sleep(d)
        return d

    t = common.best_of(uneven, repeats=3)
    assert t.result == 0.01 and 0.01 <= t.wall < 0.08 and t.median_wall >= 0.08


def _fig(section, name, value, unit="ex/s", note=""):
    return common.Figure(section, name, value, unit, note=note)


def test_loader_ratio_divides_by_the_step_at_the_same_window():
    figures = [_fig("loader", "loader T=25, 0 worker process(es)", 60.0),
               _fig("loader", "loader T=50, 2 worker process(es)", 12.0),
               _fig("train", "train step corrdistill:tiny", 8.0, note="B=8 x T=25: 1000 ms"),
               _fig("train", "train step corrdistill:full", 0.5, note="B=4 x T=50: 8000 ms"),
               _fig("train", "train step cad:tiny", 99.0, note="B=8 x T=25: 1 ms")]
    ratios = {f.name: f for f in bench_main.loader_ratios(figures)}
    assert set(ratios) == {
        "loader / train step T=25, 0 worker process(es) vs corrdistill:tiny",
        "loader / train step T=50, 2 worker process(es) vs corrdistill:full"}
    tiny = ratios["loader / train step T=25, 0 worker process(es) vs corrdistill:tiny"]
    full = ratios["loader / train step T=50, 2 worker process(es) vs corrdistill:full"]
    assert tiny.value == pytest.approx(60.0 / 8.0) and tiny.ok is True
    assert full.value == pytest.approx(24.0) and full.ok is True
    slow = bench_main.loader_ratios([_fig("loader", "loader T=25, 0 worker process(es)", 30.0),
                                     figures[2]])
    assert slow[0].value == pytest.approx(3.75) and slow[0].ok is False


def test_table_marks_goals_and_lists_processes():
    figs = [common.Figure("detect", "detect CLI warm, x", 2.5, "s", "<= 2 s", False, "a|b"),
            common.Figure("preprocess", "ratio", 0.61, "ratio", ">= 0.5", True)]
    runs = [common.SectionRun("detect", figs[:1], 3 * 2**30, 5.0, 6.0, 0, "")]
    info = dict(common.machine(), load_end=(1.0, 1.0, 1.0))
    text = bench_main.format_tables(runs, figs, info)
    assert "| detect | detect CLI warm, x | 2.5 s | <= 2 s | **missed** | a/b |" in text
    assert "| preprocess | ratio | 0.61 | >= 0.5 | met |" in text
    assert "| detect | 6.0 s | 5.0 s | 3.00 GiB | 0 |" in text


def test_plan_names_one_process_per_device_count():
    runs = bench_main.plan(["devices"], tiny=False)
    assert [r[0] for r in runs] == ["devices=1", "devices=2", "devices=4", "devices=8"]
    for name, argv, env in runs:
        n = name.split("=")[1]
        assert env["XLA_FLAGS"] == f"--xla_force_host_platform_device_count={n}"
        assert argv[argv.index("--devices") + 1] == n
    with pytest.raises(SystemExit):
        bench_main.plan(["nonsense"], tiny=True)


def test_loader_ratio_falls_back_to_the_fewest_devices():
    figures = [_fig("loader", "loader T=25, 0 worker process(es)", 60.0),
               _fig("train", "train step corrdistill:tiny on 4 devices", 4.0, note="B=8 x T=25: x"),
               _fig("train", "train step corrdistill:tiny on 2 devices", 6.0, note="B=8 x T=25: x")]
    (r,) = bench_main.loader_ratios(figures)
    assert r.value == pytest.approx(10.0) and "6.00 ex/s step" in r.note
    figures.append(_fig("train", "train step corrdistill:tiny", 12.0, note="B=8 x T=25: x"))
    (r,) = bench_main.loader_ratios(figures)
    assert r.value == pytest.approx(5.0) and r.ok is True
