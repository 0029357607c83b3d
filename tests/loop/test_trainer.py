"""The trainer's contract: each argument does what the original specification says, files appear where they should."""
from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn, optim

from phasetrain import PhaseTransitionTrainer
from tests.conftest import make_mlp


def make_trainer(tmp_path, **kwargs):
    model = kwargs.pop("model", None) or make_mlp()
    optimizer = kwargs.pop("optimizer", None) or optim.SGD(model.parameters(), lr=0.1)
    kwargs.setdefault("log_dir", tmp_path / "run")
    kwargs.setdefault("progress_bar", False)
    return PhaseTransitionTrainer(model, optimizer, nn.CrossEntropyLoss(), **kwargs)


def test_log_freq_records_train_metrics_at_its_multiples(tmp_path, loaders):
    trainer = make_trainer(tmp_path, log_freq=4, checkpoint_freq=None)
    trainer.train(*loaders, num_epochs=3)  # 18 steps
    for name in ("train_loss", "train_acc", "grad_norm", "lr", "epoch", "weight_norm"):
        assert trainer.history.steps(name).tolist() == [4, 8, 12, 16], name
    assert trainer.history.steps("val_loss").tolist() == [6, 12, 18]
    assert trainer.history.steps("val_acc").tolist() == [6, 12, 18]


def test_checkpoint_freq_names_files_by_step(tmp_path, loaders):
    trainer = make_trainer(tmp_path, checkpoint_freq=5)
    trainer.train(*loaders, num_epochs=3)
    names = sorted(p.name for p in (tmp_path / "run").glob("checkpoint_step_*.pt"))
    assert names == ["checkpoint_step_10.pt", "checkpoint_step_15.pt", "checkpoint_step_5.pt"]
    assert (tmp_path / "run" / "final_model.pt").is_file()
    assert (tmp_path / "run" / "best_model.pt").is_file()


def test_keep_last_checkpoints_prunes_oldest(tmp_path, loaders):
    trainer = make_trainer(tmp_path, checkpoint_freq=2, keep_last_checkpoints=2)
    trainer.train(*loaders, num_epochs=3)
    names = sorted(p.name for p in (tmp_path / "run").glob("checkpoint_step_*.pt"))
    assert names == ["checkpoint_step_16.pt", "checkpoint_step_18.pt"]


def test_train_loss_record_is_mean_of_step_losses(tmp_path, loaders):
    losses = []

    def recording_loss(outputs, targets):
        loss = nn.functional.cross_entropy(outputs, targets)
        if torch.is_grad_enabled():
            losses.append(loss.item())
        return loss

    model = make_mlp()
    trainer = PhaseTransitionTrainer(model, optim.SGD(model.parameters(), lr=0.1), recording_loss,
                                     log_dir=tmp_path / "run", log_freq=3, progress_bar=False)
    trainer.train(loaders[0], num_epochs=1)
    assert trainer.history.values("train_loss") == pytest.approx([sum(losses[0:3]) / 3, sum(losses[3:6]) / 3])


class NormRecordingSGD(optim.SGD):
    """SGD that remembers the global gradient norm it was handed at each step."""

    def __init__(self, params, lr):
        super().__init__(params, lr=lr)
        self.seen_norms = []

    def step(self, closure=None):
        grads = [p.grad for group in self.param_groups for p in group["params"] if p.grad is not None]
        self.seen_norms.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))
        return super().step(closure)


def test_gradient_clip_bounds_the_norm_reaching_the_optimizer_and_logs_the_unclipped_norm(tmp_path, loaders):
    model = make_mlp()
    optimizer = NormRecordingSGD(model.parameters(), lr=0.5)
    trainer = make_trainer(tmp_path, model=model, optimizer=optimizer, gradient_clip=0.05, log_freq=1)
    trainer.train(loaders[0], num_epochs=1)
    assert max(optimizer.seen_norms) <= 0.05 + 1e-6
    logged = trainer.history.values("grad_norm")
    assert logged.max() > 0.05  # the record is the norm before clipping
    assert all(min(g, 0.05) == pytest.approx(s, rel=1e-5) for g, s in zip(logged, optimizer.seen_norms))


def test_grad_norm_matches_direct_computation(tmp_path, loaders):
    model = make_mlp()
    optimizer = NormRecordingSGD(model.parameters(), lr=0.1)
    trainer = make_trainer(tmp_path, model=model, optimizer=optimizer, log_freq=1)
    trainer.train(loaders[0], num_epochs=1)
    assert trainer.history.values("grad_norm") == pytest.approx(optimizer.seen_norms, rel=1e-5)


def test_epoch_scheduler_halves_lr_each_epoch(tmp_path, loaders):
    model = make_mlp()
    optimizer = optim.SGD(model.parameters(), lr=0.4)
    scheduler = optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    trainer = make_trainer(tmp_path, model=model, optimizer=optimizer, scheduler=scheduler, log_freq=6)
    trainer.train(*loaders, num_epochs=3)
    assert trainer.history.values("lr").tolist() == pytest.approx([0.4, 0.2, 0.1])


def test_step_scheduler_steps_after_every_update(tmp_path, loaders):
    model = make_mlp()
    optimizer = optim.SGD(model.parameters(), lr=1.0)
    scheduler = optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (1 + step))
    trainer = make_trainer(tmp_path, model=model, optimizer=optimizer, scheduler=scheduler,
                           scheduler_interval="step", log_freq=1)
    trainer.train(loaders[0], num_epochs=1)
    assert trainer.history.values("lr").tolist() == pytest.approx([1 / (1 + s) for s in range(1, 7)])


def scripted_val_loss(script):
    """A loss that is ordinary cross-entropy in training and follows `script` (one value per
    validation epoch) in evaluation, so early stopping and plateau schedulers see a known curve."""
    state = {"epoch": -1, "in_val": False}

    def loss_fn(outputs, targets):
        if torch.is_grad_enabled():
            state["in_val"] = False
            return nn.functional.cross_entropy(outputs, targets)
        if not state["in_val"]:
            state["in_val"], state["epoch"] = True, state["epoch"] + 1
        return torch.tensor(script[state["epoch"]])

    return loss_fn


def test_early_stopping_stops_at_the_epoch_the_val_curve_dictates(tmp_path, loaders):
    script = [1.0, 0.8, 0.79, 0.85, 0.9, 0.7, 0.6, 0.5]
    model = make_mlp()
    trainer = PhaseTransitionTrainer(model, optim.SGD(model.parameters(), lr=0.1), scripted_val_loss(script),
                                     log_dir=tmp_path / "run", early_stopping_patience=2,
                                     early_stopping_min_delta=0.05, progress_bar=False)
    results = trainer.train(*loaders, num_epochs=8)
    # best 0.8 at epoch 1; 0.79 is not better by more than 0.05; epochs 2 and 3 are bad -> stop after epoch 3
    assert results["epochs_run"] == 4
    assert results["stopped_early"] is True
    assert results["total_training_steps"] == 24
    assert trainer.history.values("val_loss").tolist() == pytest.approx(script[:4])
    assert results["best_step"] == 18  # 0.79 is still the best loss seen, saved as best_model.pt


def test_reduce_lr_on_plateau_is_fed_the_validation_loss(tmp_path, loaders):
    script = [1.0, 1.0, 1.0, 1.0]
    model = make_mlp()
    optimizer = optim.SGD(model.parameters(), lr=1.0)
    scheduler = optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.1, patience=1)
    trainer = PhaseTransitionTrainer(model, optimizer, scripted_val_loss(script), scheduler=scheduler,
                                     log_dir=tmp_path / "run", log_freq=6, progress_bar=False)
    trainer.train(*loaders, num_epochs=4)
    assert trainer.history.values("lr").tolist() == pytest.approx([1.0, 1.0, 1.0, 0.1])


def test_seed_callbacks_receive_trainer_epoch_and_metrics(tmp_path, loaders):
    calls = []
    trainer = make_trainer(tmp_path)
    trainer.train(*loaders, num_epochs=2,
                  callbacks=[lambda tr, epoch, metrics: calls.append((tr, epoch, dict(metrics)))])
    assert [c[1] for c in calls] == [0, 1]
    assert all(c[0] is trainer for c in calls)
    for key in ("train_loss", "train_acc", "val_loss", "val_acc", "lr", "step"):
        assert key in calls[-1][2]
    assert calls[-1][2]["val_loss"] == trainer.history.last("val_loss")


def test_a_callback_can_stop_training(tmp_path, loaders):
    def stop_after_first(trainer, epoch, metrics):
        trainer.request_stop("enough")

    trainer = make_trainer(tmp_path)
    results = trainer.train(*loaders, num_epochs=5, callbacks=[stop_after_first])
    assert results["epochs_run"] == 1 and results["stop_reason"] == "enough"


def test_regression_records_no_accuracy(tmp_path):
    inputs = torch.randn(64, 4)
    data = torch.utils.data.TensorDataset(inputs, inputs.sum(dim=1, keepdim=True))
    model = nn.Linear(4, 1)
    trainer = PhaseTransitionTrainer(model, optim.SGD(model.parameters(), lr=0.05), nn.MSELoss(),
                                     log_dir=tmp_path / "run", log_freq=2, progress_bar=False)
    trainer.train(torch.utils.data.DataLoader(data, batch_size=16), torch.utils.data.DataLoader(data, batch_size=16),
                  num_epochs=2)
    assert "train_acc" not in trainer.history and "val_acc" not in trainer.history
    assert "train_loss" in trainer.history and "val_loss" in trainer.history
    assert trainer.get_training_summary()["final_train_acc"] is None


def test_accuracy_fn_is_used_for_other_tasks(tmp_path):
    inputs = torch.randn(64, 4)
    targets = (inputs[:, :1] > 0).float()
    data = torch.utils.data.TensorDataset(inputs, targets)
    model = nn.Linear(4, 1)

    def binary_accuracy(outputs, targets):
        return ((outputs > 0).float() == targets).float().mean()

    trainer = PhaseTransitionTrainer(model, optim.SGD(model.parameters(), lr=0.0), nn.BCEWithLogitsLoss(),
                                     log_dir=tmp_path / "run", log_freq=4, accuracy_fn=binary_accuracy,
                                     progress_bar=False)
    trainer.train(torch.utils.data.DataLoader(data, batch_size=16), num_epochs=1)
    with torch.no_grad():
        expected = float(binary_accuracy(model(inputs), targets))
    assert trainer.history.values("train_acc").tolist() == pytest.approx([expected])


class DictOutputs(nn.Module):
    """Returns {"logits": ...} as a Hugging Face model's ModelOutput does: (N, C), or with
    `positions`, one row of class scores per position, (N, L, C), classes last."""

    def __init__(self, positions: int | None = None) -> None:
        super().__init__()
        self.positions, self.body = positions, make_mlp()

    def forward(self, x):
        logits = self.body(x)
        return {"logits": logits if self.positions is None else logits.unsqueeze(1).expand(-1, self.positions, -1)}


def logits_loss(outputs, targets):
    logits = outputs["logits"]
    return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def test_a_mapping_of_class_logits_gets_the_accuracy_of_its_logits(tmp_path, loaders):
    model = DictOutputs()
    trainer = PhaseTransitionTrainer(model, optim.SGD(model.parameters(), lr=0.0), logits_loss,
                                     log_dir=tmp_path / "run", log_freq=6, checkpoint_freq=None, progress_bar=False)
    trainer.train(*loaders, num_epochs=1)  # lr 0: every figure is that of the initial weights
    with torch.no_grad():
        train_x, train_y = loaders[0].dataset.tensors
        val_x, val_y = loaders[1].dataset.tensors
        train_acc = (model.body(train_x).argmax(dim=1) == train_y).double().mean().item()
        val_acc = (model.body(val_x).argmax(dim=1) == val_y).double().mean().item()
    assert trainer.history.values("train_acc").tolist() == pytest.approx([train_acc])
    assert trainer.history.values("val_acc").tolist() == pytest.approx([val_acc])


def test_sequence_logits_in_a_mapping_get_no_accuracy(tmp_path):
    """(N, L, C) logits of a ModelOutput may be a causal LM's, whose labels the model shifts, or a
    token classifier's with -100 for ignored positions: no arg-max accuracy is guessed for them."""
    from phasetrain import accuracy

    inputs = torch.randn(16, 8)
    targets = torch.randint(0, 3, (16, 4))
    model = DictOutputs(positions=4)
    trainer = PhaseTransitionTrainer(model, optim.SGD(model.parameters(), lr=0.1), logits_loss,
                                     log_dir=tmp_path / "run", log_freq=1, checkpoint_freq=None, progress_bar=False)
    trainer.train([(inputs, targets)], [(inputs, targets)], num_epochs=1)
    assert "train_loss" in trainer.history and "val_loss" in trainer.history
    assert "train_acc" not in trainer.history and "val_acc" not in trainer.history
    with torch.no_grad():
        assert accuracy(model(inputs), targets) is None
        scores = model.body(inputs)  # the same scores, (N, C), against one label per sample
        expected = (scores.argmax(dim=1) == targets[:, 0]).double().mean().item()
        assert accuracy({"logits": scores}, targets[:, 0]) == pytest.approx(expected)


def test_val_metrics_are_sample_weighted_in_eval_mode(tmp_path, loaders):
    model = nn.Sequential(nn.Linear(8, 16), nn.Dropout(0.5), nn.Linear(16, 3))
    trainer = make_trainer(tmp_path, model=model, optimizer=optim.SGD(model.parameters(), lr=0.0))
    val_data = loaders[1].dataset
    uneven = torch.utils.data.DataLoader(val_data, batch_size=40)  # batches of 40 and 24
    trainer.train(loaders[0], uneven, num_epochs=1)
    model.eval()
    with torch.no_grad():
        outputs = model(val_data.tensors[0])
        expected_loss = float(nn.functional.cross_entropy(outputs, val_data.tensors[1]))
        expected_acc = float((outputs.argmax(1) == val_data.tensors[1]).float().mean())
    assert trainer.history.last("val_loss") == pytest.approx(expected_loss, rel=1e-6)
    assert trainer.history.last("val_acc") == pytest.approx(expected_acc)
    assert model.training is False  # we set it; the trainer restored train mode after validation, then we evaluated


def test_validation_restores_per_module_modes(tmp_path, loaders):
    model = nn.Sequential(nn.Linear(8, 16), nn.Dropout(0.5), nn.Linear(16, 3))
    trainer = make_trainer(tmp_path, model=model)
    seen_modes = []
    trainer.train(*loaders, num_epochs=1, callbacks=[lambda tr, e, m: seen_modes.append(model[1].training)])
    assert seen_modes == [True]


def test_metrics_json_is_strict_json_with_null_for_nan(tmp_path, loaders):
    trainer = make_trainer(tmp_path)
    trainer.train(*loaders, num_epochs=1)
    trainer.log_step(100, 1, float("nan"), 0.5, float("inf"))
    path = trainer.save_metrics()
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    document = json.loads(text)
    assert document["metrics"]["train_loss"]["values"][-1] is None
    assert document["metrics"]["train_loss"]["steps"][-1] == 100
    assert document["format"] == "phasetrain-metrics"


def test_load_checkpoint_restores_identical_weights_and_history(tmp_path, loaders):
    trainer = make_trainer(tmp_path, checkpoint_freq=6)
    trainer.train(*loaders, num_epochs=2)
    saved = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    other = make_trainer(tmp_path / "other", model=make_mlp(seed=5))
    checkpoint = other.load_checkpoint(tmp_path / "run" / "final_model.pt")
    assert checkpoint["step"] == 12 and checkpoint["epoch"] == 1
    for name, value in other.model.state_dict().items():
        assert torch.equal(value, saved[name])
    assert other.history.values("val_loss").tolist() == trainer.history.values("val_loss").tolist()
    assert other.optimizer.state_dict()["param_groups"] == trainer.optimizer.state_dict()["param_groups"]


def test_best_model_holds_the_weights_of_the_best_validation_epoch(tmp_path, loaders):
    script = [0.5, 0.2, 0.9]
    model = make_mlp()
    weights_after_epoch = []
    trainer = PhaseTransitionTrainer(model, optim.SGD(model.parameters(), lr=0.1), scripted_val_loss(script),
                                     log_dir=tmp_path / "run", progress_bar=False)
    trainer.train(*loaders, num_epochs=3,
                  callbacks=[lambda tr, e, m: weights_after_epoch.append(
                      {k: v.clone() for k, v in model.state_dict().items()})])
    best = trainer.load_checkpoint(tmp_path / "run" / "best_model.pt")
    assert best["step"] == 12
    for name, value in best["model"].items():
        assert torch.equal(value, weights_after_epoch[1][name])


def test_a_best_state_found_every_epoch_is_written_at_most_every_few_seconds_and_kept_exact(tmp_path, monkeypatch):
    import phasetrain.run.recorder as recorder_module

    writes = []
    real_save = recorder_module.save_checkpoint
    monkeypatch.setattr(recorder_module, "save_checkpoint", lambda path, payload: (writes.append(path.name),
                                                                                 real_save(path, payload)))
    model = make_mlp()
    data = [(torch.randn(32, 8, generator=torch.Generator().manual_seed(0)), torch.arange(32) % 3)]
    trainer = PhaseTransitionTrainer(model, optim.SGD(model.parameters(), lr=0.05), nn.CrossEntropyLoss(),
                                     log_dir=tmp_path / "run", progress_bar=False, checkpoint_freq=None)
    weights_after_epoch = []
    trainer.train(data, num_epochs=30, callbacks=[lambda tr, e, m: weights_after_epoch.append(
        {k: v.clone() for k, v in model.state_dict().items()})])
    best_step = trainer.get_training_summary()["best_step"]
    assert best_step == 30  # full batch: the training loss improves every epoch (an epoch is a step)
    assert writes.count("best_model.pt") <= 3  # not 30: later bests waited in memory
    best = trainer.load_checkpoint(tmp_path / "run" / "best_model.pt")
    assert best["step"] == best_step
    for name, value in best["model"].items():
        assert torch.equal(value, weights_after_epoch[best_step - 1][name])


def test_device_is_auto_detected_and_model_moved(tmp_path):
    model = make_mlp()
    trainer = make_trainer(tmp_path, model=model)
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert trainer.device.type == expected
    assert next(model.parameters()).device.type == expected


def test_monitoring_wrapper_pattern_with_log_step(tmp_path, loaders):
    from phasetrain import accuracy, global_grad_norm

    model = make_mlp()
    optimizer = optim.SGD(model.parameters(), lr=0.1)
    loss_fn = nn.CrossEntropyLoss()
    trainer = PhaseTransitionTrainer(model, optimizer, loss_fn, log_dir=tmp_path / "run", track_gradients=True,
                                     log_freq=2, progress_bar=False)
    step = 0
    expected_norms = []
    for epoch in range(2):
        for data, target in loaders[0]:
            optimizer.zero_grad()
            output = model(data)
            loss = loss_fn(output, target)
            loss.backward()
            grad_norm = trainer.grad_norm()
            expected_norms.append(float(torch.cat([p.grad.flatten() for p in model.parameters()]).norm()))
            assert float(global_grad_norm(model)) == pytest.approx(grad_norm)
            optimizer.step()
            step += 1
            if step % trainer.log_freq == 0:
                trainer._log_step(step, epoch, loss.item(), accuracy(output, target), grad_norm)
    trainer.save_metrics()
    assert trainer.history.steps("train_loss").tolist() == [2, 4, 6, 8, 10, 12]
    assert trainer.history.values("grad_norm") == pytest.approx(expected_norms[1::2], rel=1e-5)
    document = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert document["metrics"]["train_acc"]["steps"] == [2, 4, 6, 8, 10, 12]
    assert trainer.get_training_summary()["total_training_steps"] == 12


def test_log_step_runs_the_weight_norm_and_curvature_monitors_on_the_current_weights(tmp_path, loaders):
    import copy

    from tests.integrations.helpers import top_hessian_eigenvalue

    model = make_mlp()
    optimizer = optim.SGD(model.parameters(), lr=0.1)
    loss_fn = nn.CrossEntropyLoss()
    trainer = PhaseTransitionTrainer(model, optimizer, loss_fn, log_dir=tmp_path / "run", log_freq=3,
                                     progress_bar=False,
                                     track_hessian=True, hessian_method="eigenvalues", hessian_k=1, hessian_freq=4)
    fixed = next(iter(loaders[0]))
    with pytest.raises(ValueError, match="track_hessian=True in a hand-written loop needs curvature batches"):
        trainer.log_step(1, 0, 1.0)
    step, expected = 0, {}
    for data, target in loaders[0]:
        optimizer.zero_grad()
        loss_fn(model(data), target).backward()
        optimizer.step()
        step += 1
        if step % 2 == 0:  # logged every 2 steps: the monitors due since the last call still run
            trainer.log_step(step, 0, 0.5, batch=fixed)
            expected[step] = float(torch.cat([p.detach().flatten() for p in model.parameters()]).norm())
            if step == 4:
                weights_at_4 = copy.deepcopy(model)
    weight_steps = trainer.history.steps("weight_norm").tolist()
    assert weight_steps == [4, 6]  # steps 3 and 6 are due (log_freq=3): 3 is caught up at the call of step 4
    assert trainer.history.values("weight_norm").tolist() == pytest.approx([expected[4], expected[6]])
    assert trainer.history.steps("hessian_eig_1").tolist() == [4]
    x, y = fixed
    dense = top_hessian_eigenvalue(weights_at_4, lambda forward: loss_fn(forward(x.double()), y))
    assert trainer.history.values("hessian_eig_1")[0] == pytest.approx(dense, rel=1e-3)


def test_a_time_budget_keeps_a_small_run_within_it_by_the_monitors_own_accounts(tmp_path, loaders):
    from phasetrain.monitors.hessian import HessianMonitor

    clock = [0.0]

    def loss_fn(outputs, targets):  # on the monitor's clock a training step takes 1 s, a measurement 10 s
        if torch.is_grad_enabled():
            clock[0] += 1.0 if model.training else 10.0
        return nn.functional.cross_entropy(outputs, targets)

    model = make_mlp()
    monitor = HessianMonitor("diagonal", freq=5, budget=0.25, num_samples=8, num_exact=2, clock=lambda: clock[0])
    trainer = PhaseTransitionTrainer(model, optim.SGD(model.parameters(), lr=0.1), loss_fn, log_dir=tmp_path / "run",
                                     monitors=[monitor], checkpoint_freq=None, progress_bar=False)
    told = []
    monitor.note_movement = lambda moving: told.append(moving) or HessianMonitor.note_movement(monitor, moving)
    trainer.train(*loaders, num_epochs=30)  # 180 steps
    measured = trainer.history.steps("hessian_diag_mean").tolist()
    # told whether the watched metrics move at the first step, then whenever that changed
    assert told and told[0] is False and all(a != b for a, b in zip(told, told[1:]))
    assert monitor.schedule.moving is trainer.recorder.watcher.moving
    assert measured[0] == 41  # the first diagonal is expected to cost 8 + 2 steps: 25% of 40 pays for it
    assert len(measured) >= 2 and min(b - a for a, b in zip(measured, measured[1:])) >= 5
    assert monitor.schedule.trained_s == 179 and monitor.schedule.spent_s == 10.0 * len(measured)
    assert monitor.schedule.overhead() <= 0.25


def test_results_dict_holds_summary_and_history(tmp_path, loaders):
    trainer = make_trainer(tmp_path)
    results = trainer.train(*loaders, num_epochs=2)
    for key in ("final_train_acc", "phase_transitions", "total_training_steps", "final_val_loss", "best_val_loss",
                "best_val_acc", "best_step", "epochs_run", "stopped_early", "wall_time_s", "history"):
        assert key in results, key
    assert results["total_training_steps"] == 12 and results["epochs_run"] == 2
    assert results["final_val_loss"] == trainer.history.last("val_loss")
    assert results["best_val_loss"] == pytest.approx(min(trainer.history.values("val_loss")))
    assert results["wall_time_s"] > 0
    assert math.isclose(results["final_train_acc"], trainer.history.last("train_acc"))
