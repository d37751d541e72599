"""The README and docs/ stay true: a short README for users, links and anchors that resolve, the
generated node reference (docs/NODES.md) and result tables (docs/RESULTS.md, the README's table) current."""
from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.append(str(REPO))  # appended: the pack's nodes/ must not shadow ComfyUI's nodes

README = (REPO / "README.md").read_text()
NODES_DOC = (REPO / "docs" / "NODES.md").read_text()
RESULTS_DOC = (REPO / "docs" / "RESULTS.md").read_text()
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
README_MAX_LINES = 300
USER_SECTIONS = ["Install", "Quick start", "Nodes", "Supported models", "Works with", "Limits", "Troubleshooting",
                 "Documentation", "For developers"]
# Cited by code comments but kept outside the repository (research notes); nothing else may be missing.
EXTERNAL_NOTES = {"ALGORITHMS.md"}


def _bench_module(name: str):
    spec = importlib.util.spec_from_file_location(f"_doc_{name}", REPO / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _pack_nodes():
    from scripts.harness import comfy_env

    comfy_env.bootstrap()
    comfy_env.load_custom_nodes()
    import nodes  # ComfyUI's (bootstrap puts it first on sys.path)

    return {name: cls for name, cls in nodes.NODE_CLASS_MAPPINGS.items()
            if name.startswith("DiTAccel") and not name.startswith("DiTAccelDev")}


def slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(text: str) -> set[str]:
    found, seen = set(), {}
    in_code = False
    for line in text.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        match = re.match(r"#{1,6} (.+)", line)
        if match and not in_code:
            base = slug(match.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            found.add(base if n == 0 else f"{base}-{n}")
    return found


def links(text: str) -> list[str]:
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    return re.findall(r"\]\(([^)\s]+)\)", text)


def test_readme_is_short_and_for_users():
    lines = README.splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move detail to docs/"
    headings = [line[3:] for line in lines if line.startswith("## ")]
    assert headings == USER_SECTIONS, headings
    assert "docs/screenshots/" in README and "README_TABLE:START" in README


def test_readme_names_every_node_once_in_its_node_list():
    section = README.split("\n## Nodes\n", 1)[1].split("\n## ", 1)[0]
    for name, cls in _pack_nodes().items():
        display = cls.define_schema().display_name
        assert section.count(f"**{display}**") == 1, f"{name} ({display}) missing from the README's node list"


def test_node_reference_matches_the_node_schemas():
    from scripts import readme_nodes

    assert readme_nodes.render(NODES_DOC, readme_nodes.reference()) == NODES_DOC, (
        "docs/NODES.md is stale: run .venv/bin/python -m scripts.readme_nodes")


def test_every_pack_input_tooltip_is_quoted():
    for name, cls in _pack_nodes().items():
        for item in cls.define_schema().inputs:
            assert (item.tooltip or "").replace("|", "\\|") in NODES_DOC, f"{name}.{item.id}"


def test_generated_result_tables_are_current():
    zoo, tokens = _bench_module("summarize_zoo"), _bench_module("summarize_tokens")
    results, readme = zoo.render_docs(RESULTS_DOC, README)
    assert (results, readme) == (RESULTS_DOC, README), (
        "docs/RESULTS.md or the README's table is stale: run .venv/bin/python bench/summarize_zoo.py --docs")
    assert tokens.render_doc(RESULTS_DOC) == RESULTS_DOC, (
        "docs/RESULTS.md's token tables are stale: run .venv/bin/python bench/summarize_tokens.py --docs")


def test_links_and_anchors_resolve():
    checked = 0
    for doc in DOCS:
        text = doc.read_text()
        for link in links(text):
            if re.match(r"[a-z]+:", link):
                continue
            path, _, anchor = link.partition("#")
            target = (doc.parent / path).resolve() if path else doc
            assert target.exists(), f"{doc.relative_to(REPO)}: {link} does not exist"
            if anchor and target.suffix == ".md":
                assert anchor in anchors(target.read_text()), f"{doc.relative_to(REPO)}: no heading for {link}"
            checked += 1
    assert checked > 50
    for name in re.findall(r"`(\w+_forecast_cache)`", README):
        assert (REPO / "workflows" / f"{name}.json").is_file(), name


def test_link_check_catches_a_broken_anchor(tmp_path):
    doc = tmp_path / "a.md"
    doc.write_text("# Known limits\n\n## Token methods (experimental): ClusCa\n")
    assert anchors(doc.read_text()) == {"known-limits", "token-methods-experimental-clusca"}
    assert "known-limit" not in anchors(doc.read_text())


def test_docs_cited_in_code_exist():
    names = {p.name for p in (REPO / "docs").glob("*.md")}
    for package in ("accel_core", "nodes", "kernels", "scripts", "bench"):
        for path in (REPO / package).rglob("*.py"):
            for cited in re.findall(r"\b((?:docs/)?[A-Z][A-Z0-9_]*\.md)\b", path.read_text()):
                if cited.startswith("docs/"):
                    assert (REPO / cited).is_file(), f"{path.relative_to(REPO)} cites missing {cited}"
                elif cited not in EXTERNAL_NOTES:
                    assert cited in names or (REPO / cited).is_file(), f"{path.relative_to(REPO)} cites {cited}"


def test_workflow_notes_follow_the_presets():
    from accel_core import PRESETS, preset

    families = {"flux": "flux", "qwen": "qwen_image", "hunyuan": "hunyuan_video"}
    for path in sorted((REPO / "workflows").glob("*.json")):
        if "compare" in path.stem:
            continue
        family = next(f for prefix, f in families.items() if path.stem.startswith(prefix))
        note = next(n for n in json.loads(path.read_text())["nodes"] if n["type"] == "Note")["widgets_values"][0]
        for name in PRESETS:
            cfg = preset(name, family)
            if cfg.enabled:
                assert re.search(rf"{name}\s+- 1/{cfg.interval} of the steps computed at any step count, first "
                                 rf"{cfg.warmup_steps} and last {cfg.final_full_steps} in full", note), (path.name, name)
