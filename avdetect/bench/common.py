"""What every benchmark section shares: figures, the section protocol, timing, machine
description, and a random-weights model for speed measurements.

Protocol. The benchmark command (``python -m avdetect.bench``) runs each section as its
own process (``python -m avdetect.bench.<module> ...``) so that peak memory is measured
per section. A section prints human-readable progress on stderr and its results on
stdout as lines ``@@bench {json}`` (one :class:`Figure` each, :func:`emit`); the
command collects them (:func:`run_section`) and reads the section's peak RSS and CPU
time from ``os.wait4`` (the child and every process it waited for).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import pathlib
import platform
import resource
import subprocess
import sys
import time
from typing import Any, Callable, Sequence

REPO = pathlib.Path(__file__).resolve().parents[2]
# The 16 real talking-face clips beside the repository (the tests' fixture folder).
FIXTURES = REPO.parent / "shared" / "fixtures" / "realav"
MARK = "@@bench "


# ----------------------------------------------------------------------------- figures

@dataclasses.dataclass
class Figure:
    """One measured number, with its goal when the project has one.

    ``ok``: True / False when there is a goal (met / missed), None otherwise. ``note``:
    what exactly was measured (shapes, files, repeats)."""

    section: str
    name: str
    value: float
    unit: str
    goal: str = ""
    ok: bool | None = None
    note: str = ""

    def formatted(self) -> str:
        v = self.value
        if v != v:                                  # nan: not measured
            return "n/a"
        if self.unit in ("x", "ratio"):
            return f"{v:.2f}{'x' if self.unit == 'x' else ''}"
        if abs(v) >= 100:
            return f"{v:,.0f} {self.unit}"
        if abs(v) >= 10:
            return f"{v:.1f} {self.unit}"
        return f"{v:.3g} {self.unit}"


def goal_at_least(value: float, target: float) -> bool:
    return bool(value >= target)


def goal_at_most(value: float, target: float) -> bool:
    return bool(value <= target)


def emit(fig: Figure) -> None:
    """Hand one figure to the benchmark command (and show it on stderr)."""
    print(MARK + json.dumps(dataclasses.asdict(fig)), flush=True)
    print(f"  {fig.section}: {fig.name} = {fig.formatted()}"
          + (f"  [goal {fig.goal}: {'met' if fig.ok else 'MISSED'}]" if fig.goal else ""),
          file=sys.stderr, flush=True)


def parse_figures(stdout: str) -> list[Figure]:
    return [Figure(**json.loads(line[len(MARK):])) for line in stdout.splitlines()
            if line.startswith(MARK)]


# ----------------------------------------------------------------------------- sections

@dataclasses.dataclass
class SectionRun:
    """What one section process did: its figures, peak RSS (bytes, the largest of the
    process and the children it waited for), CPU seconds (user + system, children
    included), wall seconds, exit status and the tail of its stderr."""

    name: str
    figures: list[Figure]
    peak_rss: int
    cpu_s: float
    wall_s: float
    returncode: int
    stderr_tail: str
    text: str = ""           # stdout lines that are not figures (an extra's own table)


def run_section(name: str, argv: Sequence[str], *, env: dict[str, str] | None = None,
                timeout_s: float | None = None, echo: bool = True) -> SectionRun:
    """Run ``python argv...`` in a fresh process and collect its figures and resources.

    stderr is passed through live when ``echo`` (progress), and its tail is kept."""
    full_env = dict(os.environ, **(env or {}))
    full_env.setdefault("PYTHONUNBUFFERED", "1")
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, *argv], cwd=REPO, env=full_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    import threading

    err_lines: list[str] = []

    def pump_stderr() -> None:
        for line in proc.stderr:
            err_lines.append(line)
            del err_lines[:-60]
            if echo:
                sys.stderr.write(line)
                sys.stderr.flush()

    reader = threading.Thread(target=pump_stderr, daemon=True)
    reader.start()
    out_chunks: list[str] = []
    deadline = None if timeout_s is None else t0 + timeout_s
    for line in proc.stdout:                       # figures arrive as lines
        out_chunks.append(line)
        if deadline is not None and time.perf_counter() > deadline:
            proc.kill()
            break
    # os.wait4 gives this child's own resource usage (with its waited-for children),
    # where getrusage(RUSAGE_CHILDREN) would mix every section run so far.
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    reader.join(timeout=5)
    wall = time.perf_counter() - t0
    stdout = "".join(out_chunks)
    return SectionRun(name=name, figures=parse_figures(stdout),
                      peak_rss=int(usage.ru_maxrss) * 1024,      # Linux reports KiB
                      cpu_s=usage.ru_utime + usage.ru_stime, wall_s=wall,
                      returncode=proc.returncode, stderr_tail="".join(err_lines[-15:]),
                      text="".join(x for x in stdout.splitlines(keepends=True)
                                   if not x.startswith(MARK)))


def self_peak_rss() -> int:
    """Peak RSS of this process so far, bytes."""
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


# ----------------------------------------------------------------------------- timing

@dataclasses.dataclass
class Timed:
    """Best wall and best CPU seconds (this process, all threads) of repeated calls, the
    median wall, and the result of the fastest (wall) call."""

    wall: float
    cpu: float
    median_wall: float
    result: Any


def best_of(fn: Callable[[], Any], repeats: int, warmup: int = 0) -> Timed:
    """Time ``repeats`` calls of ``fn`` after ``warmup`` untimed calls. On a shared
    machine the best run is the steadiest estimate of the cost (others' load only ever
    adds time); CPU time is reported beside it."""
    for _ in range(warmup):
        fn()
    walls, cpus, best = [], [], None
    for _ in range(max(repeats, 1)):
        t0, c0 = time.perf_counter(), time.process_time()
        result = fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
        if walls[-1] == min(walls):
            best = result
    walls_sorted = sorted(walls)
    return Timed(wall=walls_sorted[0], cpu=min(cpus),
                 median_wall=walls_sorted[len(walls) // 2], result=best)


# ----------------------------------------------------------------------------- machine

def machine() -> dict[str, Any]:
    """Where and when the figures were taken."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 0
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        mem = float("nan")
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                                capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "cpu": cpu, "cores": cores, "memory_gib": round(mem, 1),
            "load": os.getloadavg(), "python": platform.python_version(), "commit": commit}


def load_text() -> str:
    one, five, _ = os.getloadavg()
    return f"load {one:.1f} (5-min {five:.1f}) on {os.cpu_count()} cores"


def fmt_bytes(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


# ----------------------------------------------------------------------------- models

def random_variables(config, seed: int = 0) -> dict[str, Any]:
    """Variables of ``config``'s method with random weights drawn in NumPy from the
    abstract init shapes (normal, std 0.05; BatchNorm variances 1): the real network at
    its real size without compiling its init, which can cost more than what is timed.
    Speed does not depend on the weights' values."""
    import jax
    import numpy as np

    from avdetect.data.random_batches import example_batch
    from avdetect.methods import build_method

    method = build_method(config)
    shapes = jax.eval_shape(method.init, jax.random.PRNGKey(0),
                            example_batch(config, batch_size=1))
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        name = "/".join(str(getattr(k, "key", k)) for k in path)
        if name.endswith("var"):
            return np.ones(leaf.shape, leaf.dtype)
        return (0.05 * rng.standard_normal(leaf.shape)).astype(leaf.dtype)

    return dict(jax.tree_util.tree_map_with_path(draw, shapes))


def random_model(config_ref: str, seed: int = 0):
    """A ``LoadedModel`` of ``'<method>:<get_config arg>'`` (e.g. ``'corrdistill:'``, the
    paper-size default, or ``'corrdistill:tiny'``) with random weights and the default
    preprocessing record, as ``avdetect detect`` would load it from an export."""
    import importlib

    from avdetect import contract, inference

    method_name, _, arg = config_ref.partition(":")
    config = importlib.import_module(f"configs.{method_name}").get_config(arg or None)
    config.data.name = "random"     # no dataset metadata to read: default preprocessing
    variables = random_variables(config, seed)
    from avdetect.methods import build_method
    method = build_method(config)
    scale = inference.score_scale(config, method)
    return inference.LoadedModel(
        config=config, method=method, variables=variables,
        threshold=inference.DEFAULT_THRESHOLDS[scale],
        threshold_source="benchmark model with random weights (default threshold)",
        threshold_origin="default", score_scale=scale,
        category_names=tuple(contract.CATEGORIES), method_names=None,
        preprocess=inference.preprocess_record(config),
        source={"kind": "export", "path": f"random:{config_ref}", "step": 0})
