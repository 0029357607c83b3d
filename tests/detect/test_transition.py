import ast
import json
from pathlib import Path

import numpy as np

import phasetrain.detect
from phasetrain.detect import Transition, detect_transitions


def test_to_dict_is_plain_json_and_round_trips():
    rng = np.random.default_rng(0)
    y = np.where(np.arange(600) > 300, 1.0, 0.0) + rng.normal(0, 0.05, 600)
    (tr,) = detect_transitions(y, window_size=20)
    tr = tr.with_metric("val_acc")
    document = json.loads(json.dumps(tr.to_dict()))
    assert Transition(**document) == tr
    assert document["metric"] == "val_acc" and isinstance(document["step"], int)


def test_detect_package_imports_no_torch():
    for path in Path(phasetrain.detect.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            assert not any(n.split(".")[0] == "torch" for n in names), path
