#!/usr/bin/env bash
# Prepare the Python environment of the ComfyUI host used by the integration tests.
#   COMFYUI_DIR  ComfyUI checkout (v0.8.0), default /opt/comfyui
#   COMFY_VENV   its venv,                   default /opt/comfyui-venv
# Idempotent: the install is skipped when the venv's stamp matches what would be installed.
# Logs go to stderr; the only stdout line is the venv's python path (callers use `| tail -n 1`).
# Writes nothing into this repository.
set -euo pipefail

COMFYUI_DIR="${COMFYUI_DIR:-/opt/comfyui}"
COMFY_VENV="${COMFY_VENV:-/opt/comfyui-venv}"

if [ ! -f "$COMFYUI_DIR/main.py" ]; then
  echo "!!! ComfyUI host not found at $COMFYUI_DIR, integration tests will be skipped !!!" >&2
  exit 0
fi

TORCH=(torch==2.14.1 torchvision==0.29.1)   # CPU use; taken from this machine's disk
# What the BGFS pack needs at run time. mediapipe 0.10.21 pins numpy<2 (1.26.x); ComfyUI accepts it.
PACK=(mediapipe==0.10.21 av safetensors pyyaml tqdm matplotlib scipy diffusers)

PY="$COMFY_VENV/bin/python"
if [ ! -x "$PY" ]; then
  # shellcheck source=pick_python.sh
  source "$(dirname "$0")/pick_python.sh"
  echo "== creating venv $COMFY_VENV ($("$PYTHON" --version))" >&2
  "$PYTHON" -m venv "$COMFY_VENV" >&2
fi

STAMP="$COMFY_VENV/.bgfs-ci-stamp"
WANT="$( { echo "${TORCH[*]} requests ${PACK[*]}"; cat "$COMFYUI_DIR/requirements.txt"; } | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]; then
  echo "== installing ComfyUI requirements into $COMFY_VENV" >&2
  pip() { "$PY" -m pip install -q --disable-pip-version-check "$@" >&2; }
  pip "${TORCH[@]}"
  # torch pins repeated so nothing below can move torch/torchvision
  pip "${TORCH[@]}" -r "$COMFYUI_DIR/requirements.txt" requests
  pip "${TORCH[@]}" "${PACK[@]}"
  "$PY" -c "import torch, numpy, aiohttp, comfyui_frontend_package, mediapipe" >&2
  echo "$WANT" > "$STAMP"
else
  echo "== $COMFY_VENV is up to date" >&2
fi

echo "$PY"
