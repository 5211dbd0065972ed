#!/usr/bin/env bash
# Train / evaluate on a GPU host: one process drives every visible GPU (the mesh's data
# axis spans them), so the command is the single-host one.
#
#   bash launch/gpu_host.sh --setup                    # once: install.sh + CUDA build of jax
#   bash launch/gpu_host.sh --config=configs/corrdistill.py --workdir=/data/runs/cd1
#   CUDA_VISIBLE_DEVICES=0,1 bash launch/gpu_host.sh --config=... --workdir=...   # some GPUs
#
# Several GPU hosts: the same command on every host, with the job's shape in the
# environment (host 0 is the coordinator; the workdir must be shared, e.g. NFS):
#   NUM_HOSTS=2 HOST_ID=0 COORDINATOR=gpu-a:12355 bash launch/gpu_host.sh --config=... --workdir=...
#   NUM_HOSTS=2 HOST_ID=1 COORDINATOR=gpu-a:12355 bash launch/gpu_host.sh --config=... --workdir=...
# (On SLURM, `srun` sets the job shape and JAX finds it: pass --multihost only.)
#
# Settings: CUDA_VISIBLE_DEVICES, NUM_HOSTS (default 1), HOST_ID, COORDINATOR (HOST:PORT),
# CUDA_EXTRA (pip extra, default cuda12), PYTHON (default .venv/bin/python),
# DRY_RUN=1 (print the command only).
set -euo pipefail

HERE="$(cd "$(dirname "$0")/.." && pwd)"
cd "$HERE"
PYTHON=${PYTHON:-.venv/bin/python}
NUM_HOSTS=${NUM_HOSTS:-1}

run() {
  if [[ "${DRY_RUN:-0}" == "1" ]]; then
    printf '%q ' "$@"; echo
  else
    "$@"
  fi
}

if [[ "${1:-}" == "--setup" ]]; then
  jax_version=$(sed -n 's/^jax==\(.*\)$/\1/p' requirements.txt | head -n1)
  run bash launch/install.sh
  run "$PYTHON" -m pip install -q "jax[${CUDA_EXTRA:-cuda12}]==${jax_version}"
  run "$PYTHON" -c "import jax; print(jax.devices())"
  exit 0
fi
if [[ $# -eq 0 || "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
  exit 2
fi

args=("$@")
if [[ "$NUM_HOSTS" -gt 1 ]]; then
  if [[ -z "${COORDINATOR:-}" || -z "${HOST_ID:-}" ]]; then
    echo "gpu_host.sh: NUM_HOSTS=$NUM_HOSTS needs COORDINATOR=HOST:PORT and HOST_ID=0..$((NUM_HOSTS - 1))" >&2
    exit 2
  fi
  if [[ "$HOST_ID" -lt 0 || "$HOST_ID" -ge "$NUM_HOSTS" ]]; then
    echo "gpu_host.sh: HOST_ID=$HOST_ID is outside 0..$((NUM_HOSTS - 1))" >&2
    exit 2
  fi
  args+=(--multihost "--coordinator_address=$COORDINATOR" "--num_processes=$NUM_HOSTS"
         "--process_id=$HOST_ID")
fi
run "$PYTHON" -m avdetect.main "${args[@]}"
