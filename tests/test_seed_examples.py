"""The original specification's two examples run, and its Quick Start leaves every promised file."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load_example(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_training_wrapper_demo_leaves_every_file_of_the_seed(tmp_path):
    demo = load_example("training_wrapper_demo")
    results = demo.main(["--samples", "600", "--log-dir", str(tmp_path), "--epochs", "13"])  # 8 steps an epoch
    names = {p.name for p in tmp_path.iterdir()}
    assert {"metrics.json", "metrics.jsonl", "best_model.pt", "final_model.pt", "checkpoint_step_100.pt"} <= names
    metrics = json.loads((tmp_path / "metrics.json").read_text())["metrics"]
    for name in ("train_loss", "train_acc", "val_loss", "val_acc", "grad_norm", "lr",
                 "hessian_diag_mean", "hessian_diag_std", "hessian_diag_max"):
        assert name in metrics, name
    assert metrics["hessian_diag_mean"]["steps"] == [50, 100]
    assert results["total_training_steps"] == 104


def test_integration_example_runs_all_three_patterns(tmp_path):
    example = load_example("integration_example")
    out = example.main(["--small", "--log-dir", str(tmp_path)])
    assert out["results"]["epochs_run"] == 3
    wrapped = out["wrapped"]
    assert wrapped.history.steps("train_loss").tolist() == list(range(10, 39, 10))
    assert (json.loads((tmp_path / "pattern2" / "metrics.json").read_text())["metrics"]["grad_norm"]["steps"]
            == [10, 20, 30])
    for pattern in ("pattern1", "pattern3"):
        assert (tmp_path / pattern / "final_model.pt").is_file()
