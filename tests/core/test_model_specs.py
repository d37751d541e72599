"""Family facts are ModelSpec data (issue 20): the host layer reads them from the spec, never from its own
per-family tables."""
from __future__ import annotations

from accel_core import MODEL_SPECS, spec_for_class
from accel_core.models import IMG_TXT, TXT_IMG


def test_joint_attention_order_per_block_group():
    flux, qwen, hv = (spec_for_class(c) for c in ("Flux", "QwenImageTransformer2DModel", "HunyuanVideo"))
    assert [g.token_order for g in flux.block_groups] == [TXT_IMG, TXT_IMG]
    assert [g.token_order for g in qwen.block_groups] == [TXT_IMG]
    assert [g.token_order for g in hv.block_groups] == [IMG_TXT, IMG_TXT]  # flipped double blocks, img+txt single


def test_which_family_takes_which_feature():
    specs = {name: MODEL_SPECS.get(name) for name in MODEL_SPECS.names()}
    assert all(s.token_methods and s.progressive_resolution for s in specs.values())
    assert [name for name, s in specs.items() if s.reads_rope_options] == ["flux"]


def test_no_family_table_left_in_the_host_layer():
    import ast
    from pathlib import Path

    families = set(MODEL_SPECS.names())
    found = []
    for path in sorted((Path(__file__).resolve().parents[2] / "nodes").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Dict, ast.Tuple, ast.List, ast.Set)):
                items = node.keys if isinstance(node, ast.Dict) else node.elts
                names = {i.value for i in items if isinstance(i, ast.Constant) and isinstance(i.value, str)}
                if len(names & families) >= 2:
                    found.append(f"{path.name}:{node.lineno}")
    assert not found, f"per-family tables in nodes/ (make them ModelSpec fields): {found}"
