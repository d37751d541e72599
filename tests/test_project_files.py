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
    assert (REPO / "LICENSE").read_text().lstrip().startswith("GNU GENERAL PUBLIC LICENSE")


def test_constraints_pin_torch_for_every_dev_install():
    pins = (REPO / "constraints.txt").read_text()
    assert "torch==2.15.0" in pins and "torchvision==0.29.2" in pins
    assert 'PIP_CONSTRAINT="$ROOT/constraints.txt"' in (REPO / "scripts" / "setup.sh").read_text()


def test_kernel_probe_honours_the_reference_override(monkeypatch):
    import kernels

    monkeypatch.setenv("DITACCEL_KERNELS", "off")
    assert kernels.available() is False
