"""The integrations are optional: the core never imports a framework, and a missing one says how to install it."""
from __future__ import annotations

import importlib
import subprocess
import sys

import pytest


def test_core_and_integrations_package_import_no_framework():
    code = ("import sys, phasetrain, phasetrain.integrations, phasetrain.cli, phasetrain.report, "
            "phasetrain.loop.trainer; "
            "print(sorted(m for m in ('lightning', 'transformers', 'accelerate') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("module", "blocked", "extra"),
    [("phasetrain.integrations.lightning", ("lightning", "lightning.pytorch"), "phasetrain[lightning]"),
     ("phasetrain.integrations.transformers", ("transformers",), "phasetrain[transformers]")],
)
def test_a_missing_framework_raises_importerror_naming_the_extra(monkeypatch, module, blocked, extra):
    monkeypatch.delitem(sys.modules, module, raising=False)
    for name in blocked:
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ImportError, match=extra.replace("[", r"\[").replace("]", r"\]")):
        importlib.import_module(module)
