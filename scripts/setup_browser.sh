#!/usr/bin/env bash
# Installs what the real-browser test needs (tests/browser/): Debian's chromium and, from npm,
# playwright-core at the version in tests/browser/package-lock.json. Idempotent: when both are
# already there it returns in about a second. Kept apart from scripts/setup.sh so that browser
# changes never invalidate the Python venv.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BROWSER_DIR="$ROOT/tests/browser"
CHROMIUM="${DITACCEL_CHROMIUM:-/usr/bin/chromium}"

if [[ ! -x "$CHROMIUM" ]]; then
  if [[ "$(id -u)" -ne 0 ]] && ! command -v sudo >/dev/null; then
    echo "setup_browser: $CHROMIUM is missing; install Debian's chromium package as root" >&2
    exit 1
  fi
  SUDO=""; [[ "$(id -u)" -ne 0 ]] && SUDO="sudo"
  echo "setup_browser: installing Debian chromium"
  $SUDO apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends chromium >/dev/null
fi

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "setup_browser: node and npm (Node.js >= 20) are required for playwright-core" >&2
  exit 1
fi
NODE_MAJOR="$(node -p 'process.versions.node.split(".")[0]')"
if (( NODE_MAJOR < 20 )); then
  echo "setup_browser: Node.js >= 20 required by playwright-core (found $(node --version))" >&2
  exit 1
fi

STAMP="$BROWSER_DIR/node_modules/.dit_accel_stamp"
WANT="$(cat "$BROWSER_DIR/package.json" "$BROWSER_DIR/package-lock.json" | sha256sum | cut -d' ' -f1)"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" && -d "$BROWSER_DIR/node_modules/playwright-core" ]]; then
  echo "setup_browser: chromium and playwright-core are up to date"
  exit 0
fi
echo "setup_browser: installing playwright-core (npm ci)"
(cd "$BROWSER_DIR" && npm ci --no-audit --no-fund --loglevel=error)
echo "$WANT" > "$STAMP"
echo "setup_browser: done ($("$CHROMIUM" --version 2>/dev/null | head -1))"
