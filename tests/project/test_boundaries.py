"""Layer boundaries: accel_core/ and kernels/ never import ComfyUI (nor each other)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HOST_MODULES = {"comfy", "comfy_api", "comfy_extras", "nodes", "folder_paths", "server", "execution", "utils"}
FORBIDDEN = {
    "accel_core": HOST_MODULES | {"kernels"},
    "kernels": HOST_MODULES | {"accel_core"},
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_stays_host_free(package):
    files = sorted((REPO / package).rglob("*.py"))
    assert files, f"{package} has no modules"
    offenders = {str(f.relative_to(REPO)): sorted(_imports(f) & FORBIDDEN[package]) for f in files}
    offenders = {k: v for k, v in offenders.items() if v}
    assert not offenders, f"forbidden imports: {offenders}"


def test_boundary_check_catches_a_forbidden_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import comfy.model_patcher\nfrom folder_paths import x\n")
    assert _imports(bad) & HOST_MODULES == {"comfy", "folder_paths"}


def test_user_requirements_never_install_torch():
    lines = [ln.split("#")[0].strip().lower() for ln in (REPO / "requirements.txt").read_text().splitlines()]
    assert not any(ln.startswith(("torch", "triton")) for ln in lines if ln)


def test_no_print_in_library_code():
    for package in ("accel_core", "kernels", "nodes"):
        for path in (REPO / package).rglob("*.py"):
            tree = ast.parse(path.read_text())
            calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "print"]
            assert not calls, f"print() in {path}"
