#!/usr/bin/env bash
# Train / evaluate on a Cloud TPU pod slice: the same command on every worker (host).
#
#   export TPU_NAME=avdetect-v4 ZONE=us-central2-b ACCELERATOR_TYPE=v4-16
#   bash launch/tpu_pod.sh create                      # the TPU VM (all workers)
#   bash launch/tpu_pod.sh setup                       # copy this checkout + install, every worker
#   bash launch/tpu_pod.sh run --config=configs/corrdistill.py \
#        --workdir=/mnt/avdetect-bucket/runs/cd1 --config.data.data_dir=/mnt/avdetect-bucket/tfds
#   bash launch/tpu_pod.sh ssh 'tail -n 20 ~/avdetect/run.log'   # any command, every worker
#   bash launch/tpu_pod.sh status | delete
#
# `run` starts `python -m avdetect.main ARGS --multihost` on every worker in the
# background (nohup, output in ~/avdetect/run.log on each worker) and returns; `run-fg`
# keeps the ssh sessions attached instead. A killed or preempted job resumes from its
# last checkpoint when the same `run` command is given again.
# The workdir and the dataset must be visible to every worker at the same path (a GCS
# bucket mounted with gcsfuse, or a Filestore share): see launch/README.md.
#
# Settings (environment variables):
#   TPU_NAME, ZONE         required
#   ACCELERATOR_TYPE       default v4-8 (e.g. v4-16, v5litepod-16)
#   RUNTIME_VERSION        default tpu-ubuntu2204-base
#   PROJECT                default: gcloud's configured project
#   SPOT=1                 create a Spot (preemptible) TPU VM
#   REMOTE_DIR             checkout folder on the workers, default avdetect (under ~)
#   GCLOUD                 the gcloud binary, default gcloud
#   DRY_RUN=1              print the gcloud commands instead of running them
set -euo pipefail

HERE="$(cd "$(dirname "$0")/.." && pwd)"
GCLOUD=${GCLOUD:-gcloud}
ACCELERATOR_TYPE=${ACCELERATOR_TYPE:-v4-8}
RUNTIME_VERSION=${RUNTIME_VERSION:-tpu-ubuntu2204-base}
REMOTE_DIR=${REMOTE_DIR:-avdetect}

# The header comment of this file, without the '#'.
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 2; }

need() {
  for v in "$@"; do
    if [[ -z "${!v:-}" ]]; then echo "tpu_pod.sh: set $v (see the header of $0)" >&2; exit 2; fi
  done
}

# Runs (or with DRY_RUN=1 prints) one gcloud command, arguments quoted for a shell.
gc() {
  if [[ "${DRY_RUN:-0}" == "1" ]]; then
    printf '%q ' "$GCLOUD" "$@"; echo
  else
    "$GCLOUD" "$@"
  fi
}

common_flags() {
  echo "--zone=$ZONE"
  [[ -n "${PROJECT:-}" ]] && echo "--project=$PROJECT"
  return 0
}

# ssh to every worker of the slice with one command line.
on_all() {
  local cmd="$1"
  mapfile -t flags < <(common_flags)
  gc compute tpus tpu-vm ssh "$TPU_NAME" "${flags[@]}" --worker=all --command="$cmd"
}

jax_version() { sed -n 's/^jax==\(.*\)$/\1/p' "$HERE/requirements.txt" | head -n1; }

# The python -m avdetect.main command of every worker, each argument shell-quoted.
train_command() {
  local args
  args=$(printf '%q ' "$@")
  echo "env AVDETECT_MULTIHOST=1 .venv/bin/python -m avdetect.main ${args}--multihost"
}

cmd=${1:-}
[[ -z "$cmd" ]] && usage
shift
case "$cmd" in
  create)
    need TPU_NAME ZONE
    mapfile -t flags < <(common_flags)
    extra=()
    [[ "${SPOT:-0}" == "1" ]] && extra+=(--spot)
    gc compute tpus tpu-vm create "$TPU_NAME" "${flags[@]}" \
      --accelerator-type="$ACCELERATOR_TYPE" --version="$RUNTIME_VERSION" "${extra[@]}"
    ;;
  setup)
    need TPU_NAME ZONE
    # Tracked files as they are in the working tree (no .git, no .venv, no outputs).
    tarball=$(mktemp -t avdetect-XXXXXX.tgz)
    (cd "$HERE" && git ls-files -z | tar --null -T - -czf "$tarball")
    mapfile -t flags < <(common_flags)
    gc compute tpus tpu-vm scp "$tarball" "$TPU_NAME:~/avdetect.tgz" "${flags[@]}" --worker=all
    rm -f "$tarball"
    # TPU VM images ship Python 3.10; avdetect needs 3.11 (Ubuntu 22.04 has it in universe).
    on_all "mkdir -p ~/$REMOTE_DIR && tar -xzf ~/avdetect.tgz -C ~/$REMOTE_DIR && cd ~/$REMOTE_DIR \
&& (command -v python3.11 >/dev/null || (sudo apt-get update -qq && sudo apt-get install -y -qq python3.11 python3.11-venv)) \
&& PYTHON=python3.11 bash launch/install.sh && .venv/bin/python -m pip install -q 'jax[tpu]==$(jax_version)' \
&& .venv/bin/python -c 'import jax; print(jax.process_index(), jax.local_device_count(), jax.device_count())'"
    ;;
  run)
    need TPU_NAME ZONE
    [[ $# -eq 0 ]] && { echo "tpu_pod.sh run: give the avdetect.main arguments (--config=... --workdir=...)" >&2; exit 2; }
    on_all "cd ~/$REMOTE_DIR && (nohup $(train_command "$@") > run.log 2>&1 < /dev/null &) && echo started: see ~/$REMOTE_DIR/run.log"
    ;;
  run-fg)
    need TPU_NAME ZONE
    [[ $# -eq 0 ]] && { echo "tpu_pod.sh run-fg: give the avdetect.main arguments" >&2; exit 2; }
    on_all "cd ~/$REMOTE_DIR && $(train_command "$@")"
    ;;
  ssh)
    need TPU_NAME ZONE
    [[ $# -eq 0 ]] && { echo "tpu_pod.sh ssh: give a command" >&2; exit 2; }
    on_all "$*"
    ;;
  status)
    need TPU_NAME ZONE
    mapfile -t flags < <(common_flags)
    gc compute tpus tpu-vm describe "$TPU_NAME" "${flags[@]}"
    ;;
  delete)
    need TPU_NAME ZONE
    mapfile -t flags < <(common_flags)
    gc compute tpus tpu-vm delete "$TPU_NAME" "${flags[@]}" --quiet
    ;;
  -h|--help|help) usage ;;
  *) echo "tpu_pod.sh: unknown command '$cmd'" >&2; usage ;;
esac
