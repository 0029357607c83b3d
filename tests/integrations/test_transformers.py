"""PhaseTransitionTrainerCallback inside a real Hugging Face Trainer (CPU, no hub download), checked
against exact references recorded independently of the callback."""
from __future__ import annotations

import copy
import json
import pickle

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from transformers import PrinterCallback, Trainer, TrainerCallback, TrainingArguments  # noqa: E402

from phasetrain import load_metrics  # noqa: E402
from phasetrain.integrations.transformers import PhaseTransitionTrainerCallback  # noqa: E402
from phasetrain.run.ownership import RunFolderInUse  # noqa: E402
from phasetrain.run.summary import training_summary  # noqa: E402

from .helpers import TinyClassifier, classification_data, top_hessian_eigenvalue  # noqa: E402

CLIP = 1e-3  # HF's max_grad_norm, far below the gradient norms: clipping always acts
HESSIAN_FREQ = 3


class PairDataset(Dataset):
    """Dict items {"x": (8,), "labels": ()} as an HF data collator expects."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[index], "labels": self.y[index]}


def accuracy(prediction) -> dict[str, float]:
    return {"accuracy": float((prediction.predictions.argmax(-1) == prediction.label_ids).mean())}


class PreClipNorms(TrainerCallback):
    """Independent reference: per-parameter gradient norms taken by autograd hooks as each gradient
    is accumulated (before HF clips), summed at `on_pre_optimizer_step`; also the norm HF leaves
    after clipping, and the exact top Hessian eigenvalue of the curvature batch at curvature steps."""

    def __init__(self, model: nn.Module, curvature_batch: dict[str, torch.Tensor]) -> None:
        self.pre_clip: dict[int, float] = {}
        self.post_clip: dict[int, float] = {}
        self.top_eigenvalue: dict[int, float] = {}
        self._squares: dict[int, torch.Tensor] = {}
        self.batch = curvature_batch
        for index, p in enumerate(model.parameters()):
            p.register_post_accumulate_grad_hook(
                lambda p, i=index: self._squares.__setitem__(i, (p.grad.double() ** 2).sum()))

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        step = state.global_step + 1
        self.pre_clip[step] = float(torch.sqrt(sum(self._squares.values())))
        self.post_clip[step] = float(torch.sqrt(sum((p.grad.double() ** 2).sum() for p in model.parameters())))
        if step % HESSIAN_FREQ == 0:
            x, y = self.batch["x"].double(), self.batch["labels"]
            self.top_eigenvalue[step] = top_hessian_eigenvalue(model, lambda forward: forward(x, labels=y)["loss"])


def train(output_dir, callback: PhaseTransitionTrainerCallback, reference: TrainerCallback | None = None,
          model: nn.Module | None = None, resume_from_checkpoint=None, **overrides) -> Trainer:
    """2 epochs of 6 steps (batch 32), evaluation every epoch, HF's printer off."""
    x, y = classification_data()
    options = dict(output_dir=str(output_dir), report_to=[], use_cpu=True, per_device_train_batch_size=32,
                   per_device_eval_batch_size=64, num_train_epochs=2, logging_steps=2, eval_strategy="epoch",
                   save_strategy="no", learning_rate=0.1, max_grad_norm=CLIP, disable_tqdm=True,
                   dataloader_num_workers=0, seed=0)
    trainer = Trainer(model=model or TinyClassifier(), args=TrainingArguments(**{**options, **overrides}),
                      train_dataset=PairDataset(x[:192], y[:192]), eval_dataset=PairDataset(x[192:], y[192:]),
                      compute_metrics=accuracy, callbacks=[callback] + ([reference] if reference else []))
    trainer.remove_callback(PrinterCallback)
    trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    return trainer


def curvature_batch() -> dict[str, torch.Tensor]:
    x, y = classification_data()
    return {"x": x[:32], "labels": y[:32]}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A 12-step run logging every step, with curvature: (callback, reference, log_dir, HF trainer)."""
    root = tmp_path_factory.mktemp("hf")
    callback = PhaseTransitionTrainerCallback(root / "run", track_hessian=True, hessian_method="eigenvalues",
                                              hessian_freq=HESSIAN_FREQ, hessian_k=1,
                                              hessian_batches=[curvature_batch()])
    model = TinyClassifier()
    reference = PreClipNorms(model, curvature_batch())
    trainer = train(root / "hf", callback, reference, model=model, logging_steps=1)
    return callback, reference, root / "run", trainer


def test_metrics_json_has_phasetrain_names_at_hf_steps(run):
    _, _, log_dir, _ = run
    history, meta = load_metrics(log_dir / "metrics.json")
    assert {"train_loss", "train_acc", "grad_norm", "lr", "epoch", "weight_norm", "val_loss", "val_acc",
            "hessian_eig_1"} == set(history.names())
    for name in ("train_loss", "train_acc", "grad_norm", "lr", "epoch", "weight_norm"):
        np.testing.assert_array_equal(history.steps(name), np.arange(1, 13), err_msg=name)
    np.testing.assert_array_equal(history.steps("val_acc"), [6, 12])
    np.testing.assert_array_equal(history.values("epoch"), [0] * 6 + [1] * 6)
    assert meta["total_training_steps"] == 12 and meta["epochs_run"] == 2 and meta["finished"] is True
    assert meta["framework"] == "transformers"


def test_records_are_hfs_own_log_history_under_phasetrain_names(run):
    callback, _, _, trainer = run
    logged = trainer.state.log_history
    pairs = {"train_loss": "loss", "lr": "learning_rate", "val_loss": "eval_loss", "val_acc": "eval_accuracy"}
    for ours, theirs in pairs.items():
        entries = [(e["step"], e[theirs]) for e in logged if theirs in e]
        assert callback.history.steps(ours).tolist() == [step for step, _ in entries], ours
        np.testing.assert_allclose(callback.history.values(ours), [value for _, value in entries], rtol=1e-12,
                                   err_msg=ours)


def test_grad_norm_is_the_pre_clipping_norm(run):
    _, reference, log_dir, _ = run
    history, _ = load_metrics(log_dir)
    np.testing.assert_allclose(history.values("grad_norm"), [reference.pre_clip[s] for s in range(1, 13)], rtol=1e-5)
    # HF clips before on_pre_optimizer_step: the gradients a callback sees there are clipped
    np.testing.assert_allclose([reference.post_clip[s] for s in range(1, 13)], CLIP, rtol=1e-3)


def test_hessian_top_eigenvalue_matches_the_dense_hessian_of_the_given_batch(run):
    callback, reference, _, _ = run
    np.testing.assert_array_equal(callback.history.steps("hessian_eig_1"), [3, 6, 9, 12])
    exact = [reference.top_eigenvalue[s] for s in (3, 6, 9, 12)]
    np.testing.assert_allclose(callback.history.values("hessian_eig_1"), exact, rtol=1e-3)


def test_summary_reads_the_run(run):
    callback, _, log_dir, _ = run
    history, meta = load_metrics(log_dir)
    summary = training_summary(history, meta)
    assert summary["final_train_loss"] == pytest.approx(history.values("train_loss")[-1])
    assert summary["final_val_acc"] == pytest.approx(history.values("val_acc")[-1])
    assert summary == {**callback.get_training_summary(), "wall_time_s": summary["wall_time_s"]}
    lines = [json.loads(line) for line in (log_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines if "train_loss" in r] == list(range(1, 13))


def test_resume_from_an_hf_checkpoint_keeps_the_records_before_it(tmp_path):
    log_dir = tmp_path / "run"
    first = PhaseTransitionTrainerCallback(log_dir)
    train(tmp_path / "hf", first, save_strategy="steps", save_steps=6)
    resumed = PhaseTransitionTrainerCallback(log_dir)
    train(tmp_path / "hf", resumed, resume_from_checkpoint=str(tmp_path / "hf" / "checkpoint-6"))
    history, _ = load_metrics(log_dir)
    np.testing.assert_array_equal(history.steps("train_loss"), [2, 4, 6, 8, 10, 12])
    np.testing.assert_array_equal(history.steps("val_loss"), [6, 12])
    np.testing.assert_allclose(history.values("train_loss"), first.history.values("train_loss"), rtol=1e-5)


class CountsPredictions:
    """The test's own count, (correct, samples) of each training forward (a copy of the model
    carries a copy of it, counting into its own list)."""

    def __init__(self):
        self.counted = []

    def __call__(self, module, args, kwargs, output):
        if module.training and torch.is_grad_enabled():
            correct = int((output["logits"].argmax(dim=1) == kwargs["labels"]).sum())
            self.counted.append((correct, len(kwargs["labels"])))


class CopiesTheModel(TrainerCallback):
    """Deep-copies and pickles the model mid-run (an EMA copy, `torch.save(model)`), and trains the
    copy's forward: phasetrain's accuracy hook must neither break the copy nor count its forwards."""

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step == 2:
            x, y = classification_data()
            for copy_ in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
                copy_.train()
                copy_(x[:32], labels=y[:32])["loss"].backward()


def test_train_acc_is_the_arg_max_accuracy_of_the_training_forwards_of_each_logging_window(tmp_path):
    model, count = TinyClassifier(), CountsPredictions()
    model.register_forward_hook(count, with_kwargs=True)
    counted = count.counted
    callback = PhaseTransitionTrainerCallback(tmp_path / "run")
    train(tmp_path / "hf", callback, CopiesTheModel(), model=model, logging_steps=3)
    assert len(counted) == 12  # one forward per step; evaluation and curvature forwards are not counted
    windows = [counted[i:i + 3] for i in range(0, 12, 3)]
    expected = [sum(c for c, _ in window) / sum(n for _, n in window) for window in windows]
    np.testing.assert_array_equal(callback.history.steps("train_acc"), [3, 6, 9, 12])
    np.testing.assert_allclose(callback.history.values("train_acc"), expected, rtol=1e-12)
    assert len(set(expected)) > 1  # the windows differ: a whole-run mean would not pass


def test_a_new_run_in_a_used_folder_is_refused_with_the_callbacks_ways_out_and_overwrite_clears_it(tmp_path):
    log_dir = tmp_path / "run"
    train(tmp_path / "hf", PhaseTransitionTrainerCallback(log_dir))
    with pytest.raises(RunFolderInUse, match=r"resume_from_checkpoint=.*overwrite=True \(to the trainer or the call"):
        train(tmp_path / "hf", PhaseTransitionTrainerCallback(log_dir))
    second = PhaseTransitionTrainerCallback(log_dir, overwrite=True)
    train(tmp_path / "hf", second, num_train_epochs=1)
    history, meta = load_metrics(log_dir)
    assert meta["run_id"] == second.recorder.run_id
    np.testing.assert_array_equal(history.steps("train_loss"), [2, 4, 6])  # only the new run's records


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"track_hessian": True}, ValueError, "hessian_batches is required"),
        ({"hessian_batches": [{"x": torch.zeros(2, 8)}]}, ValueError, "'labels'"),
        ({"hessian_batches": [(torch.zeros(2, 8), torch.zeros(2))]}, TypeError, r"hessian_batches\[0\]"),
        ({"hessian_freq": 0}, ValueError, "hessian_freq"),
    ],
)
def test_bad_arguments_are_refused_naming_the_argument(tmp_path, kwargs, error, match):
    with pytest.raises(error, match=match):
        PhaseTransitionTrainerCallback(tmp_path, **kwargs)


def test_phasetrains_metrics_join_hfs_log_history_and_report_to_destinations(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    callback = PhaseTransitionTrainerCallback(tmp_path / "run", track_hessian=True, hessian_method="eigenvalues",
                                              hessian_freq=2, hessian_k=1, hessian_batches=[curvature_batch()])
    x, y = classification_data()
    args = TrainingArguments(output_dir=str(tmp_path / "hf"), report_to=["tensorboard"], use_cpu=True,
                             per_device_train_batch_size=32,
                             num_train_epochs=1, logging_steps=2, save_strategy="no", disable_tqdm=True,
                             dataloader_num_workers=0, seed=0)
    trainer = Trainer(model=TinyClassifier(), args=args, train_dataset=PairDataset(x[:192], y[:192]))
    trainer.remove_callback(PrinterCallback)
    callback.attach(trainer)
    trainer.train()
    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert [entry["step"] for entry in logged] == [2, 4, 6]
    assert all("weight_norm" in entry and "hessian_eig_1" in entry for entry in logged)
    assert [entry["hessian_eig_1"] for entry in logged] == callback.history.values("hessian_eig_1").tolist()
    events = EventAccumulator(str(next((tmp_path / "hf").rglob("events.out.tfevents.*")).parent))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert any(tag.endswith("hessian_eig_1") for tag in tags) and any(tag.endswith("weight_norm") for tag in tags)
