"""The web extension's layout code (web/js/dit_accel_timeline.js) under node's own test runner."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def test_timeline_layout_unit_tests_pass():
    node = shutil.which("node")
    if node is None:
        if os.environ.get("CI"):
            pytest.fail("node is missing: run `bash scripts/setup_browser.sh`")
        pytest.skip("node is not installed")
    proc = subprocess.run([node, "--test", "timeline.test.mjs"], cwd=HERE, capture_output=True, text=True,
                          timeout=120)
    out = proc.stdout + proc.stderr
    passed = re.search(r"^# pass (\d+)", out, flags=re.M)
    assert proc.returncode == 0 and passed and int(passed.group(1)) >= 6, out[-3000:]
