#!/usr/bin/env python3
"""Run a multi-host job as N processes on this machine (the pod code path, locally).

    python launch/local_multiprocess.py -n 2 -- --config=configs/corrdistill.py:tiny,data=random \\
        --workdir=/tmp/cd2

starts N copies of ``python -m avdetect.main ARGS --multihost
--coordinator_address=localhost:PORT --num_processes=N --process_id=I`` (PORT: a free port,
process 0 is the coordinator), prints their output line by line prefixed with ``[pI]``,
and returns 0 when all succeed. When one fails (or the timeout passes) the others are
stopped - they would otherwise wait forever at the next collective - and the exit code
is the failed process's (1 on timeout).

Devices per process: ``--cpu_devices K`` gives each process K virtual CPU devices
(``JAX_PLATFORMS=cpu``, ``--xla_force_host_platform_device_count=K``): 2 processes x 4
devices run an 8-device mesh on a laptop. ``--gpus_per_process K`` gives process I the GPUs
``I*K .. I*K+K-1`` (``CUDA_VISIBLE_DEVICES``). By default every process sees what the
machine has (on a GPU host, prefer one process for all GPUs: launch/gpu_host.sh).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Sequence

GRACE_S = 5.0          # SIGTERM, then SIGKILL after this long


def free_port() -> int:
    """A free TCP port on localhost for the coordinator."""
    try:
        import portpicker
        return portpicker.pick_unused_port()
    except ImportError:   # portpicker is a test/runtime nicety; a bound socket works too
        import socket
        with socket.socket() as s:
            s.bind(("localhost", 0))
            return s.getsockname()[1]


def process_command(module: str, args: Sequence[str], *, port: int, num_processes: int,
                    process_id: int, python: str = sys.executable) -> list[str]:
    """The command line of process ``process_id``."""
    return [python, "-u", "-m", module, *args, "--multihost",
            f"--coordinator_address=localhost:{port}", f"--num_processes={num_processes}",
            f"--process_id={process_id}"]


def process_env(process_id: int, *, cpu_devices: int | None = None,
                gpus_per_process: int | None = None, base: dict | None = None) -> dict[str, str]:
    """The environment of process ``process_id`` (device visibility, unbuffered output)."""
    env = dict(os.environ if base is None else base)
    env["PYTHONUNBUFFERED"] = "1"
    if cpu_devices:
        env["JAX_PLATFORMS"] = "cpu"
        flags = [f for f in env.get("XLA_FLAGS", "").split()
                 if not f.startswith("--xla_force_host_platform_device_count")]
        env["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={cpu_devices}"])
    if gpus_per_process:
        first = process_id * gpus_per_process
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(first + k) for k in range(gpus_per_process))
    return env


def _pump(stream, prefix: str, lock: threading.Lock) -> None:
    """Copies a child's output to our stdout, one prefixed line at a time."""
    for line in iter(stream.readline, ""):
        with lock:
            sys.stdout.write(f"{prefix} {line}" if line.endswith("\n") else f"{prefix} {line}\n")
            sys.stdout.flush()
    stream.close()


def _stop(procs: Sequence[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.time() + GRACE_S
    for p in procs:
        try:
            p.wait(timeout=max(deadline - time.time(), 0.1))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def launch(args: Sequence[str], *, num_processes: int, module: str = "avdetect.main",
           cpu_devices: int | None = None, gpus_per_process: int | None = None,
           timeout: float | None = None) -> int:
    """Runs the N processes (see the module docstring); returns the exit code."""
    if num_processes < 1:
        raise ValueError(f"num_processes must be >= 1, got {num_processes}")
    port = free_port()
    lock = threading.Lock()
    procs, pumps = [], []
    print(f"[launch] {num_processes} processes, coordinator localhost:{port}", flush=True)
    try:
        for i in range(num_processes):
            cmd = process_command(module, args, port=port, num_processes=num_processes, process_id=i)
            print(f"[launch] p{i}: {' '.join(cmd)}", flush=True)
            p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                 bufsize=1, env=process_env(i, cpu_devices=cpu_devices,
                                                            gpus_per_process=gpus_per_process))
            procs.append(p)
            t = threading.Thread(target=_pump, args=(p.stdout, f"[p{i}]", lock), daemon=True)
            t.start()
            pumps.append(t)
        start = time.time()
        code = 0
        while True:
            codes = [p.poll() for p in procs]
            failed = [(i, c) for i, c in enumerate(codes) if c not in (None, 0)]
            if failed:
                i, code = failed[0]
                print(f"[launch] p{i} exited with code {code}: stopping the others", flush=True)
                break
            if all(c == 0 for c in codes):
                break
            if timeout is not None and time.time() - start > timeout:
                print(f"[launch] timeout after {timeout:.0f} s: stopping all processes", flush=True)
                code = 1
                break
            time.sleep(0.2)
    except KeyboardInterrupt:
        print("[launch] interrupted: stopping all processes", flush=True)
        code = 130
    finally:
        _stop(procs)
        for t in pumps:
            t.join(timeout=GRACE_S)
    if code == 0:
        print(f"[launch] all {num_processes} processes finished", flush=True)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" in argv:
        split = argv.index("--")
        ours, theirs = argv[:split], argv[split + 1:]
    else:
        ours, theirs = argv, []
    ap = argparse.ArgumentParser(
        prog="launch/local_multiprocess.py", description=__doc__.split("\n\n")[0],
        epilog="Everything after -- goes to every process (python -m MODULE ...).")
    ap.add_argument("-n", "--num_processes", type=int, default=2)
    ap.add_argument("--module", default="avdetect.main", help="python -m MODULE (default avdetect.main)")
    ap.add_argument("--cpu_devices", type=int, default=None, help="virtual CPU devices per process")
    ap.add_argument("--gpus_per_process", type=int, default=None, help="GPUs per process")
    ap.add_argument("--timeout", type=float, default=None, help="seconds before everything is stopped")
    opts = ap.parse_args(ours)
    if opts.num_processes < 1:
        ap.error("--num_processes must be >= 1")
    return launch(theirs, num_processes=opts.num_processes, module=opts.module,
                  cpu_devices=opts.cpu_devices, gpus_per_process=opts.gpus_per_process,
                  timeout=opts.timeout)


if __name__ == "__main__":
    sys.exit(main())
