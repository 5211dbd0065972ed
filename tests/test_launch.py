"""launch/: the local multi-process launcher (run for real: two processes training the toy
method through avdetect.main with a coordinator on localhost), its failure handling, and
the TPU-pod / GPU-host scripts against a stand-in gcloud that records its arguments."""

from __future__ import annotations

import json
import os
import pathlib
import shlex
import subprocess
import sys
import tarfile
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
LAUNCH = REPO / "launch"
sys.path.insert(0, str(LAUNCH))
import local_multiprocess as lm  # noqa: E402


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)
    env.update(PYTHONPATH=os.pathsep.join([str(REPO / "tests"), str(REPO)]), JAX_PLATFORMS="cpu")
    env.update(extra)
    return env


# ----------------------------------------------------------------------------------
# local_multiprocess.py
# ----------------------------------------------------------------------------------

def test_process_commands_and_environments():
    cmd = lm.process_command("avdetect.main", ["--config=c.py", "--workdir=w"], port=1234,
                             num_processes=3, process_id=2, python="py")
    assert cmd == ["py", "-u", "-m", "avdetect.main", "--config=c.py", "--workdir=w", "--multihost",
                   "--coordinator_address=localhost:1234", "--num_processes=3", "--process_id=2"]
    env = lm.process_env(1, cpu_devices=4, base={"XLA_FLAGS": "--xla_foo=1 --xla_force_host_platform_device_count=9"})
    assert env["XLA_FLAGS"].split() == ["--xla_foo=1", "--xla_force_host_platform_device_count=4"]
    assert env["JAX_PLATFORMS"] == "cpu" and env["PYTHONUNBUFFERED"] == "1"
    assert lm.process_env(2, gpus_per_process=2, base={})["CUDA_VISIBLE_DEVICES"] == "4,5"
    assert "CUDA_VISIBLE_DEVICES" not in lm.process_env(0, base={})


def test_two_processes_train_with_a_local_coordinator(tmp_path):
    workdir = tmp_path / "wd"
    proc = subprocess.run(
        [sys.executable, str(LAUNCH / "local_multiprocess.py"), "-n", "2", "--cpu_devices", "2",
         "--timeout", "400", "--", f"--config={REPO / 'tests' / 'toy_method.py'}",
         f"--workdir={workdir}", "--config.train.steps=2", "--config.train.eval_every=0",
         "--config.train.ckpt_every=2", "--config.data.random_eval_videos=4"],
        cwd=REPO, env=_env(), capture_output=True, text=True, timeout=450)
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:]
    assert "[launch] all 2 processes finished" in out
    for i in (0, 1):
        # every line of a child is prefixed; each process joined the 2-process job
        assert f"[p{i}]" in out and f"jax.distributed: process {i} of 2" in out
    assert "devices: 4 (2 local) in 2 process(es)" in out          # one global mesh
    data = workdir / "checkpoints" / "2" / "data"
    assert sorted(p.name for p in data.glob("process_*")) == ["process_0-of-2.json", "process_1-of-2.json"]
    assert json.loads((workdir / "eval_test.json").read_text())["video"]["overall"]["n"] == 4
    assert all(line.startswith(("[p0]", "[p1]", "[launch]")) for line in out.splitlines())


def test_a_failing_process_stops_the_others(tmp_path):
    (tmp_path / "flaky.py").write_text(
        "import sys, time\n"
        "pid = int([a for a in sys.argv if a.startswith('--process_id=')][0].split('=')[1])\n"
        "if pid == 1:\n"
        "    print('process 1 fails on purpose'); sys.exit(3)\n"
        "print('process 0 waits at a barrier that never completes', flush=True)\n"
        "time.sleep(300)\n")
    t0 = time.time()
    proc = subprocess.run([sys.executable, str(LAUNCH / "local_multiprocess.py"), "-n", "2",
                           "--module", "flaky", "--", "--anything=1"], cwd=tmp_path,
                          env=_env(PYTHONPATH=str(tmp_path)), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3
    assert time.time() - t0 < 60                      # p0 was stopped, not waited for
    assert "[p1] process 1 fails on purpose" in proc.stdout
    assert "[launch] p1 exited with code 3: stopping the others" in proc.stdout


def test_timeout_stops_everything(tmp_path):
    (tmp_path / "slow.py").write_text("import time\ntime.sleep(300)\n")
    proc = subprocess.run([sys.executable, str(LAUNCH / "local_multiprocess.py"), "-n", "2",
                           "--module", "slow", "--timeout", "2"], cwd=tmp_path,
                          env=_env(PYTHONPATH=str(tmp_path)), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "[launch] timeout after 2 s" in proc.stdout


# ----------------------------------------------------------------------------------
# tpu_pod.sh / gpu_host.sh
# ----------------------------------------------------------------------------------

@pytest.fixture
def fake_gcloud(tmp_path):
    """A gcloud stand-in: appends its argv (JSON) to calls.jsonl; copies scp'd files."""
    log = tmp_path / "calls.jsonl"
    script = tmp_path / "gcloud"
    script.write_text(
        "#!" + sys.executable + "\n"
        "import json, shutil, sys\n"
        f"open({str(log)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n"
        "if 'scp' in sys.argv:\n"
        f"    shutil.copy(sys.argv[sys.argv.index('scp') + 1], {str(tmp_path / 'sent.tgz')!r})\n")
    script.chmod(0o755)

    def run(*args: str, **env: str) -> tuple[subprocess.CompletedProcess, list[list[str]]]:
        if log.exists():
            log.unlink()
        proc = subprocess.run(["bash", str(LAUNCH / "tpu_pod.sh"), *args], cwd=tmp_path,
                              env={**os.environ, "GCLOUD": str(script), "TPU_NAME": "pod",
                                   "ZONE": "us-central2-b", **env},
                              capture_output=True, text=True, timeout=60)
        calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
        return proc, calls

    return run, tmp_path


def _flag(call: list[str], name: str) -> str:
    return next(a.split("=", 1)[1] for a in call if a.startswith(f"--{name}="))


def test_tpu_pod_create_setup_run(fake_gcloud):
    run, root = fake_gcloud
    proc, calls = run("create", ACCELERATOR_TYPE="v4-16", SPOT="1", PROJECT="proj")
    assert proc.returncode == 0, proc.stderr
    assert calls == [["compute", "tpus", "tpu-vm", "create", "pod", "--zone=us-central2-b",
                      "--project=proj", "--accelerator-type=v4-16",
                      "--version=tpu-ubuntu2204-base", "--spot"]]

    proc, calls = run("setup")
    assert proc.returncode == 0, proc.stderr
    scp, ssh = calls
    assert scp[:4] == ["compute", "tpus", "tpu-vm", "scp"] and "--worker=all" in scp
    with tarfile.open(root / "sent.tgz") as tar:
        names = set(tar.getnames())
    assert {"avdetect/cli.py", "launch/install.sh", "requirements.txt"} <= names
    assert not any(n.startswith((".venv", ".git/")) for n in names)
    assert ssh[:5] == ["compute", "tpus", "tpu-vm", "ssh", "pod"] and "--worker=all" in ssh
    remote = _flag(ssh, "command")
    assert "bash launch/install.sh" in remote and "'jax[tpu]==0.10.2'" in remote

    proc, calls = run("run", "--config=configs/corrdistill.py", "--workdir=/mnt/b/run 1",
                      "--config.train.steps=10")
    assert proc.returncode == 0, proc.stderr
    (ssh,) = calls
    assert "--worker=all" in ssh
    remote = shlex.split(_flag(ssh, "command"))
    start = next(i for i, tok in enumerate(remote) if tok.endswith("nohup")) + 1   # "(nohup"
    stop = remote.index(">")
    assert remote[start:stop] == ["env", "AVDETECT_MULTIHOST=1", ".venv/bin/python", "-m",
                                  "avdetect.main", "--config=configs/corrdistill.py",
                                  "--workdir=/mnt/b/run 1", "--config.train.steps=10", "--multihost"]


def test_tpu_pod_usage_errors(fake_gcloud):
    run, _ = fake_gcloud
    proc, calls = run("run")                              # no arguments for avdetect.main
    assert proc.returncode == 2 and not calls
    proc, calls = run("launch-missiles")
    assert proc.returncode == 2 and "unknown command" in proc.stderr and not calls
    proc, calls = run("create", TPU_NAME="")
    assert proc.returncode == 2 and "set TPU_NAME" in proc.stderr and not calls


def _gpu(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(LAUNCH / "gpu_host.sh"), *args],
                          env={**os.environ, "DRY_RUN": "1", **env},
                          capture_output=True, text=True, timeout=60)


def test_gpu_host_commands():
    one = _gpu("--config=configs/cad.py", "--workdir=/data/run a")
    assert one.returncode == 0
    assert shlex.split(one.stdout) == [".venv/bin/python", "-m", "avdetect.main",
                                       "--config=configs/cad.py", "--workdir=/data/run a"]
    two = _gpu("--config=c.py", "--workdir=w", NUM_HOSTS="2", HOST_ID="1", COORDINATOR="gpu-a:12355")
    assert shlex.split(two.stdout)[3:] == ["--config=c.py", "--workdir=w", "--multihost",
                                           "--coordinator_address=gpu-a:12355", "--num_processes=2",
                                           "--process_id=1"]
    bad = _gpu("--config=c.py", NUM_HOSTS="2", HOST_ID="0")
    assert bad.returncode == 2 and "COORDINATOR" in bad.stderr
    bad = _gpu("--config=c.py", NUM_HOSTS="2", HOST_ID="2", COORDINATOR="h:1")
    assert bad.returncode == 2 and "outside" in bad.stderr
    setup = _gpu("--setup")
    lines = [shlex.split(line) for line in setup.stdout.splitlines()]
    assert lines[0] == ["bash", "launch/install.sh"]
    assert lines[1] == [".venv/bin/python", "-m", "pip", "install", "-q", "jax[cuda12]==0.10.2"]
