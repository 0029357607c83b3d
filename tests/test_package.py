"""The public surface: every exported name resolves, and the CLI path does not import torch."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import phasetrain

ROOT = Path(__file__).resolve().parents[1]


def test_every_exported_name_resolves():
    for name in phasetrain.__all__:
        assert getattr(phasetrain, name) is not None, name


def test_reading_a_run_folder_does_not_import_torch():
    code = "import sys, phasetrain.cli, phasetrain.run.history, phasetrain.detect; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"}, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
