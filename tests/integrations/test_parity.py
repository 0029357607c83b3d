"""One model, one data set, three front ends (the native trainer, Lightning, the Hugging Face
Trainer): the same metric names, the same steps for the same curves, the same summary, and the
same answers from the trainer's methods, the summary and the `phasetrain` command."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

pl = pytest.importorskip("lightning.pytorch")
pytest.importorskip("transformers")

from transformers import PrinterCallback, Trainer, TrainingArguments  # noqa: E402

from phasetrain import Monitor, PhaseTransitionTrainer, load_metrics  # noqa: E402
from phasetrain.cli import main as cli  # noqa: E402
from phasetrain.integrations.lightning import PhaseTransitionCallback  # noqa: E402
from phasetrain.integrations.transformers import PhaseTransitionTrainerCallback  # noqa: E402

from .helpers import TinyClassifier, classification_data  # noqa: E402

BATCH, EPOCHS, LOG_FREQ, JUMP = 32, 6, 2, 25  # 6 updates an epoch, 36 in all
EXPECTED_NAMES = {"train_loss", "grad_norm", "lr", "epoch", "weight_norm", "probe", "val_loss"}


class Probe(Monitor):
    """A curve with a known transition, recorded through each front end's monitor hook: 0.1 before
    step JUMP, 0.9 from it on, with a fixed small wiggle. Every front end must give it the same steps."""

    freq = 1

    def compute(self, ctx):
        return {"probe": (0.9 if ctx.step >= JUMP else 0.1) + 0.002 * np.sin(ctx.step)}


def model_loss(outputs, targets):
    return outputs["loss"]


def native(log_dir):
    x, y = classification_data()
    batches = [({"x": x[i:i + BATCH], "labels": y[i:i + BATCH]}, y[i:i + BATCH]) for i in range(0, 192, BATCH)]
    val = [({"x": x[192:], "labels": y[192:]}, y[192:])]
    model = TinyClassifier()
    trainer = PhaseTransitionTrainer(model, torch.optim.SGD(model.parameters(), lr=0.5), model_loss, device="cpu",
                                     log_dir=log_dir, log_freq=LOG_FREQ, checkpoint_freq=None, monitors=[Probe()],
                                     progress_bar=False)
    trainer.train(batches, val, num_epochs=EPOCHS)
    return trainer


class LitNet(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.model = TinyClassifier()

    def forward(self, x):
        return self.model(x)

    def training_step(self, batch, batch_idx):
        return self.model(*batch)["loss"]

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", self.model(*batch)["loss"])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.5)


def lightning(log_dir):
    x, y = classification_data()
    callback = PhaseTransitionCallback(log_dir, log_freq=LOG_FREQ, monitors=[Probe()])
    trainer = pl.Trainer(max_epochs=EPOCHS, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         callbacks=[callback])
    trainer.fit(LitNet(), DataLoader(TensorDataset(x[:192], y[:192]), batch_size=BATCH),
                DataLoader(TensorDataset(x[192:], y[192:]), batch_size=64))
    return callback


class Pairs(Dataset):
    def __init__(self, x, y) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "labels": self.y[i]}


def hugging_face(root):
    x, y = classification_data()
    callback = PhaseTransitionTrainerCallback(root / "run", monitors=[Probe()])
    args = TrainingArguments(output_dir=str(root / "hf"), report_to=[], use_cpu=True, per_device_train_batch_size=BATCH,
                             per_device_eval_batch_size=64, num_train_epochs=EPOCHS, logging_steps=LOG_FREQ,
                             eval_strategy="epoch", save_strategy="no", learning_rate=0.5, lr_scheduler_type="constant",
                             disable_tqdm=True, dataloader_num_workers=0, seed=0)
    trainer = Trainer(model=TinyClassifier(), args=args, train_dataset=Pairs(x[:192], y[:192]),
                      eval_dataset=Pairs(x[192:], y[192:]), callbacks=[callback])
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    return callback


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("parity")
    return {"phasetrain": (native(root / "native"), root / "native"),
            "lightning": (lightning(root / "lightning"), root / "lightning"),
            "transformers": (hugging_face(root / "hf"), root / "hf" / "run")}


def test_every_front_end_records_the_same_metric_names(runs):
    """The same names, but accuracy: the native trainer reads it from the (N, C) logits the model
    returns, and so does the Hugging Face callback for training forwards (`train_acc`; `val_acc`
    comes from `compute_metrics`, which this run has none of); Lightning's takes it from what the
    module logs, and this module logs none."""
    accuracy = {"phasetrain": {"train_acc", "val_acc"}, "transformers": {"train_acc"}, "lightning": set()}
    for name, (front_end, log_dir) in runs.items():
        expected = EXPECTED_NAMES | accuracy[name]
        assert set(front_end.history.names()) == expected, name
        assert set(load_metrics(log_dir)[0].names()) == expected, name


def test_every_front_end_records_at_the_same_steps(runs):
    for name, (front_end, _) in runs.items():
        history = front_end.history
        assert history.steps("probe").tolist() == list(range(1, 37)), name
        assert history.steps("train_loss").tolist() == list(range(LOG_FREQ, 37, LOG_FREQ)), name
        assert history.steps("weight_norm").tolist() == list(range(LOG_FREQ, 37, LOG_FREQ)), name
        assert history.steps("val_loss").tolist() == [6, 12, 18, 24, 30, 36], name


def test_the_same_curve_gives_the_same_transition_steps_through_every_front_end(runs):
    found = {name: front_end.detect_phase_transitions("probe") for name, (front_end, _) in runs.items()}
    assert found["phasetrain"] == found["lightning"] == found["transformers"] == [JUMP]


def test_every_front_end_gives_the_same_summary_keys_and_best_step_rule(runs):
    keys = {name: set(front_end.get_training_summary()) for name, (front_end, _) in runs.items()}
    assert keys["phasetrain"] == keys["lightning"] == keys["transformers"]
    for name, (front_end, _) in runs.items():
        history = front_end.history
        lowest = int(history.steps("val_loss")[np.argmin(history.values("val_loss"))])
        summary = front_end.get_training_summary()
        assert summary["best_step"] == lowest and summary["total_training_steps"] == 36, name
        assert summary["epochs_run"] == EPOCHS, name


def test_trainer_methods_summary_and_cli_give_the_same_steps(runs, capsys):
    for name, (front_end, log_dir) in runs.items():
        summary = front_end.get_training_summary()
        for metric in ("probe", "train_loss", "val_loss"):
            from_method = front_end.detect_phase_transitions(metric)
            capsys.readouterr()
            assert cli(["detect", str(log_dir), "--metric", metric, "--json"]) == 0
            from_cli = [t["step"] for t in json.loads(capsys.readouterr().out)]
            assert from_method == from_cli, (name, metric)
            if metric in summary["phase_transitions"]:
                assert from_method == [t["step"] for t in summary["phase_transitions"][metric]], (name, metric)
        assert cli(["summary", str(log_dir), "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["best_step"] == summary["best_step"], name
