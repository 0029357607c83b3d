"""PhaseTransitionCallback inside a real Lightning Trainer, checked against the PhaseTransitionTrainer
and against exact references recorded by the LightningModule itself."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

pl = pytest.importorskip("lightning.pytorch")

from phasetrain import PhaseTransitionTrainer, load_metrics  # noqa: E402
from phasetrain.integrations.lightning import PhaseTransitionCallback  # noqa: E402
from phasetrain.run.ownership import RunFolderInUse  # noqa: E402
from phasetrain.run.summary import training_summary  # noqa: E402

from .helpers import classification_data, reference_grad_norm, top_hessian_eigenvalue  # noqa: E402

CLIP = 1e-3  # far below the gradient norms, so clipping always acts
LOG_FREQ = 3
HESSIAN_FREQ = 3


def make_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 3))


def loaders() -> tuple[DataLoader, DataLoader]:
    """192 training samples in 6 batches of 32 (no shuffle: runs are repeatable), 64 validation."""
    x, y = classification_data()
    return (DataLoader(TensorDataset(x[:192], y[:192]), batch_size=32),
            DataLoader(TensorDataset(x[192:], y[192:]), batch_size=32))


class Classifier(pl.LightningModule):
    """Records, independently of the callback, each batch's loss and accuracy, each step's
    pre-clipping gradient norm and the exact top Hessian eigenvalue at curvature steps, on the
    batch the curvature monitor keeps (the one of the first step it runs at)."""

    def __init__(self, fail_at_step: int | None = None) -> None:
        super().__init__()
        self.net = make_net()
        self.fail_at_step = fail_at_step
        self.losses: list[float] = []
        self.accs: list[float] = []
        self.grad_norms: dict[int, float] = {}
        self.top_eigenvalue: dict[int, float] = {}
        self.curvature_batch: tuple[torch.Tensor, torch.Tensor] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        if self.curvature_batch is None and (self.global_step + 1) % HESSIAN_FREQ == 0:
            self.curvature_batch = (x.clone(), y.clone())
        if self.fail_at_step == self.global_step + 1:
            raise RuntimeError("boom")
        out = self(x)
        loss = F.cross_entropy(out, y)
        acc = (out.argmax(dim=1) == y).float().mean()
        self.losses.append(float(loss.detach()))
        self.accs.append(float(acc))
        self.log("train_acc", acc)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        out = self(x)
        self.log("val_loss", F.cross_entropy(out, y))
        self.log("val_acc", (out.argmax(dim=1) == y).float().mean())

    def on_before_optimizer_step(self, optimizer) -> None:
        step = self.trainer.global_step + 1
        self.grad_norms[step] = reference_grad_norm(self.parameters())
        if step % HESSIAN_FREQ == 0:
            x, y = self.curvature_batch
            self.top_eigenvalue[step] = top_hessian_eigenvalue(self.net, lambda f: F.cross_entropy(f(x.double()), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.5)


def fit(module: pl.LightningModule, callback: PhaseTransitionCallback, max_epochs: int = 2, ckpt_path=None,
        **kwargs) -> pl.Trainer:
    """Fit on the tiny task with Lightning's bar, logger, checkpointing and summary off."""
    train, val = loaders()
    trainer = pl.Trainer(max_epochs=max_epochs, callbacks=[callback], enable_progress_bar=False, logger=False,
                         enable_checkpointing=False, enable_model_summary=False, accelerator="cpu", **kwargs)
    trainer.fit(module, train, val, ckpt_path=ckpt_path)
    return trainer


def make_callback(log_dir, **kwargs) -> PhaseTransitionCallback:
    options = dict(log_freq=LOG_FREQ, track_hessian=True, hessian_method="eigenvalues", hessian_freq=HESSIAN_FREQ,
                   hessian_k=1, loss_fn=F.cross_entropy)
    return PhaseTransitionCallback(log_dir, **{**options, **kwargs})


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One 2-epoch run (12 steps) with clipping and curvature: (module, callback, log_dir)."""
    log_dir = tmp_path_factory.mktemp("lightning")
    module, callback = Classifier(), make_callback(log_dir)
    fit(module, callback, gradient_clip_val=CLIP)
    return module, callback, log_dir


def test_metrics_json_has_the_trainers_names_at_the_trainers_steps(run, tmp_path):
    _, _, log_dir = run
    history, meta = load_metrics(log_dir / "metrics.json")
    train, val = loaders()
    net = make_net()
    trainer = PhaseTransitionTrainer(net, torch.optim.SGD(net.parameters(), lr=0.5), F.cross_entropy, device="cpu",
                                     log_dir=tmp_path, log_freq=LOG_FREQ,
                                     checkpoint_freq=None, track_hessian=True, hessian_method="eigenvalues",
                                     hessian_freq=HESSIAN_FREQ, hessian_k=1, gradient_clip=CLIP)
    trainer.train(train, val, num_epochs=2)
    assert sorted(history.names()) == sorted(trainer.history.names())
    for name in trainer.history.names():
        np.testing.assert_array_equal(history.steps(name), trainer.history.steps(name), err_msg=name)
    np.testing.assert_array_equal(history.steps("train_loss"), [3, 6, 9, 12])
    np.testing.assert_array_equal(history.steps("val_acc"), [6, 12])  # the sanity check is not recorded
    np.testing.assert_array_equal(history.values("epoch"), [0, 0, 1, 1])
    assert meta["total_training_steps"] == 12 and meta["epochs_run"] == 2 and meta["finished"] is True


def test_train_loss_and_acc_are_window_means_of_the_modules_own_figures(run):
    module, callback, _ = run
    losses, accs = np.reshape(module.losses, (4, 3)), np.reshape(module.accs, (4, 3))
    np.testing.assert_allclose(callback.history.values("train_loss"), losses.mean(axis=1), rtol=1e-6)
    np.testing.assert_allclose(callback.history.values("train_acc"), accs.mean(axis=1), rtol=1e-6)


def test_grad_norm_is_the_pre_clipping_norm_averaged_over_the_window(run):
    module, callback, _ = run
    reference = np.reshape([module.grad_norms[s] for s in range(1, 13)], (4, 3)).mean(axis=1)
    np.testing.assert_allclose(callback.history.values("grad_norm"), reference, rtol=1e-5)
    assert callback.history.values("grad_norm").min() > 100 * CLIP


def test_hessian_top_eigenvalue_matches_the_dense_hessian_of_the_curvature_batch(run):
    module, callback, _ = run
    history = callback.history
    np.testing.assert_array_equal(history.steps("hessian_eig_1"), [3, 6, 9, 12])
    exact = [module.top_eigenvalue[s] for s in (3, 6, 9, 12)]
    np.testing.assert_allclose(history.values("hessian_eig_1"), exact, rtol=1e-3)
    np.testing.assert_allclose(history.values("hessian_eos_ratio"), np.array(exact) * 0.5 / 2, rtol=1e-3)


def test_summary_and_detection_read_the_run(run):
    _, callback, log_dir = run
    history, meta = load_metrics(log_dir)
    summary = training_summary(history, meta)
    assert summary["total_training_steps"] == 12
    assert summary["final_val_acc"] == pytest.approx(history.values("val_acc")[-1])
    assert summary == {**callback.get_training_summary(), "wall_time_s": summary["wall_time_s"]}
    assert callback.detect_phase_transitions("train_loss", window_size=3) == [
        t.step for t in callback.find_transitions("train_loss", window_size=3)]
    with pytest.raises(KeyError, match="val_acc"):
        callback.detect_phase_transitions("no_such_metric")


def test_metrics_jsonl_streams_the_same_records(run):
    _, callback, log_dir = run
    lines = [json.loads(line) for line in (log_dir / "metrics.jsonl").read_text().splitlines()]
    streamed = [(r["step"], r["train_loss"]) for r in lines if "train_loss" in r]
    assert streamed == list(zip(callback.history.steps("train_loss").tolist(),
                                callback.history.values("train_loss").tolist()))


def test_gradient_accumulation_records_per_step_losses(tmp_path):
    module, callback = Classifier(), PhaseTransitionCallback(tmp_path, log_freq=1)
    fit(module, callback, max_epochs=1, accumulate_grad_batches=2)
    np.testing.assert_array_equal(callback.history.steps("train_loss"), [1, 2, 3])
    np.testing.assert_allclose(callback.history.values("train_loss"), np.reshape(module.losses, (3, 2)).mean(axis=1),
                               rtol=1e-6)
    np.testing.assert_allclose(callback.history.values("grad_norm"), [module.grad_norms[s] for s in (1, 2, 3)],
                               rtol=1e-5)


def test_a_lightning_checkpoint_carries_the_history_and_resumes_it_exactly(run, tmp_path):
    _, uninterrupted, _ = run
    first = fit(Classifier(), make_callback(tmp_path), max_epochs=1, gradient_clip_val=CLIP)
    first.save_checkpoint(tmp_path / "epoch1.ckpt")
    fit(Classifier(), make_callback(tmp_path), max_epochs=2, ckpt_path=tmp_path / "epoch1.ckpt", gradient_clip_val=CLIP)
    resumed, _ = load_metrics(tmp_path)
    assert sorted(resumed.names()) == sorted(uninterrupted.history.names())
    for name in resumed.names():
        np.testing.assert_array_equal(resumed.steps(name), uninterrupted.history.steps(name), err_msg=name)
        np.testing.assert_allclose(resumed.values(name), uninterrupted.history.values(name), rtol=1e-6, err_msg=name)


def test_an_exception_leaves_a_complete_metrics_json_saying_why(tmp_path):
    callback = PhaseTransitionCallback(tmp_path, log_freq=3)
    with pytest.raises(RuntimeError, match="boom"):
        fit(Classifier(fail_at_step=5), callback)
    history, meta = load_metrics(tmp_path)
    np.testing.assert_array_equal(history.steps("train_loss"), [3])
    assert meta["finished"] is False and meta["stop_reason"] == "RuntimeError: boom"


def test_a_new_run_in_a_used_folder_is_refused_with_the_ways_out_and_overwrite_clears_it(tmp_path):
    fit(Classifier(), PhaseTransitionCallback(tmp_path, log_freq=3), max_epochs=1)
    with pytest.raises(RunFolderInUse, match=r"ckpt_path=.*overwrite=True \(to the trainer or the callback"):
        fit(Classifier(), PhaseTransitionCallback(tmp_path, log_freq=3), max_epochs=1)
    second = PhaseTransitionCallback(tmp_path, log_freq=2, overwrite=True)
    fit(Classifier(), second, max_epochs=1)
    history, meta = load_metrics(tmp_path)
    assert meta["run_id"] == second.recorder.run_id
    np.testing.assert_array_equal(history.steps("train_loss"), [2, 4, 6])  # only the new run's records


def test_lightning_early_stopping_is_reported_in_the_summary(tmp_path):
    stopper = pl.callbacks.EarlyStopping(monitor="val_loss", patience=1, min_delta=10.0)
    callback = PhaseTransitionCallback(tmp_path, log_freq=3)
    train, val = loaders()
    trainer = pl.Trainer(max_epochs=5, callbacks=[callback, stopper], enable_progress_bar=False, logger=False,
                         enable_checkpointing=False, enable_model_summary=False)
    trainer.fit(Classifier(), train, val)
    summary = training_summary(*load_metrics(tmp_path))
    assert summary["stopped_early"] is True and summary["epochs_run"] == 2 and summary["total_training_steps"] == 12
    assert summary["stop_reason"] == "early stopping: val_loss stopped improving"


def test_accuracy_fn_replaces_the_logged_metric(tmp_path):
    calls = []

    def accuracy_fn(step_output, batch):
        calls.append(step_output["loss"].shape)
        return 0.25

    callback = PhaseTransitionCallback(tmp_path, log_freq=3, accuracy_fn=accuracy_fn)
    fit(Classifier(), callback, max_epochs=1)
    np.testing.assert_allclose(callback.history.values("train_acc"), [0.25, 0.25])
    assert len(calls) == 6


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"track_hessian": True}, ValueError, "loss_fn is required"),
        ({"log_freq": 0}, ValueError, "log_freq"),
        ({"hessian_method": "power"}, ValueError, "hessian_method"),
        ({"accuracy_fn": "acc"}, TypeError, "accuracy_fn"),
        ({"watch_metrics": "val_acc"}, TypeError, "watch_metrics"),
        ({"monitors": [object()]}, TypeError, r"monitors\[0\]"),
    ],
)
def test_bad_arguments_are_refused_naming_the_argument(tmp_path, kwargs, error, match):
    with pytest.raises(error, match=match):
        PhaseTransitionCallback(tmp_path, **kwargs)


def csv_columns(path) -> dict[str, dict[int, float]]:
    """Each column of a CSVLogger metrics.csv as {step: value}, from the rows that have a value in it."""
    columns: dict[str, dict[int, float]] = {}
    with open(path, newline="") as file:
        for row in csv.DictReader(file):
            for name, value in row.items():
                if name != "step" and value:
                    columns.setdefault(name, {})[int(row["step"])] = float(value)
    return columns


def test_phasetrains_own_metrics_reach_lightnings_loggers_at_lightnings_step_of_the_same_update(tmp_path):
    """Lightning logs the metrics of update s, and of a validation right after it, at step s - 1 (its
    global_step during the update); phasetrain's figures of update s go to the same step, so the rows
    join by step, while phasetrain's own history keeps step s."""
    logger = pl.loggers.CSVLogger(tmp_path / "csv", name="", version=0)
    module, callback = Classifier(), make_callback(tmp_path / "run")
    train, val = loaders()
    trainer = pl.Trainer(max_epochs=2, callbacks=[callback], enable_progress_bar=False, logger=logger,
                         log_every_n_steps=LOG_FREQ, enable_checkpointing=False, enable_model_summary=False,
                         accelerator="cpu")
    trainer.fit(module, train, val)
    logged = csv_columns(tmp_path / "csv" / "version_0" / "metrics.csv")
    assert logged["train_acc"] == pytest.approx({s - 1: module.accs[s - 1] for s in (3, 6, 9, 12)})
    assert sorted(logged["val_acc"]) == [5, 11]  # the validations after updates 6 and 12
    history = callback.history
    for name in ("grad_norm", "weight_norm", "hessian_eig_1"):
        np.testing.assert_array_equal(history.steps(name), [3, 6, 9, 12], err_msg=name)
        assert logged[name] == pytest.approx({s - 1: value for s, value in zip(history.steps(name).tolist(),
                                                                              history.values(name).tolist())}), name


def test_the_old_one_argument_hook_still_works_with_a_deprecation_warning(tmp_path):
    with pytest.warns(DeprecationWarning, match="deprecated"):
        make_callback(tmp_path, on_phase_transition=lambda transition: None)
    seen = []
    callback = make_callback(tmp_path, on_phase_transition=lambda source, transition: seen.append(source))
    callback.recorder.transition_hooks[0]("t")
    assert seen == [callback]
