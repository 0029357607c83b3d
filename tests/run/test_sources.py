"""Every format `load_run` reads, written by the library that really writes it, read back and detected."""
import csv
import json
import subprocess
import sys

import numpy as np
import pytest

from phasetrain.detect import detect_in_history
from phasetrain.run.history import MetricHistory, load_metrics, save_metrics
from phasetrain.run.sources import FORMATS, detect_format, load_run

JUMP = 240
"""The step at which every synthetic curve below jumps from ~0.1 to ~0.9."""


def jump_curve(steps, seed=0, at=JUMP):
    """An accuracy-like curve: 0.1 before step `at`, 0.9 from it on, with a little noise."""
    rng = np.random.default_rng(seed)
    steps = np.asarray(steps)
    return np.where(steps < at, 0.1, 0.9) + rng.normal(0, 0.01, steps.size)


STEPS = list(range(2, 402, 2))
VALUES = jump_curve(STEPS).tolist()


def assert_jump_found(history, metric, at=JUMP, tolerance=6):
    """The detector, with its automatic window, finds the upward jump within `tolerance` steps of `at`."""
    found = detect_in_history(history, metric)
    assert any(abs(t.step - at) <= tolerance and t.direction == "up" for t in found), found


def test_tensorboard_log_dir_from_summary_writer_reads_every_scalar_tag(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(tmp_path / "tb") as writer:
        for step, value in zip(STEPS, VALUES):
            writer.add_scalar("val/accuracy", value, step)
            if step % 10 == 0:
                writer.add_scalar("train/loss", 1.0 / step, step)
        writer.add_scalars("acc", {"train": 0.5}, 10)
        writer.add_hparams({"weight_decay": 0.1, "optimizer": "adamw"}, {"hp/final_acc": 0.9})
    history, meta = load_run(tmp_path / "tb")
    assert meta["format"] == "tensorboard" and meta["config"] == {"weight_decay": 0.1, "optimizer": "adamw"}
    assert set(history.names()) == {"val/accuracy", "train/loss", "acc_train/acc"}
    assert meta["hparam_metrics"] == {"hp/final_acc": pytest.approx(0.9)}
    assert history.steps("val/accuracy").tolist() == STEPS
    np.testing.assert_allclose(history.values("val/accuracy"), VALUES, rtol=1e-6)  # float32 in the file
    assert history.steps("train/loss").tolist() == list(range(10, 401, 10))
    assert_jump_found(history, "val/accuracy")
    (event_file,) = (tmp_path / "tb").glob("events.out.tfevents.*")
    single, _ = load_run(event_file)
    assert set(single.names()) == {"val/accuracy", "train/loss"}


def test_tensorboard_reads_tf2_scalar_tensors_and_honours_a_restart_purge(tmp_path):
    from tensorboard.plugins.scalar.summary_v2 import scalar_pb
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(tmp_path, purge_step=0) as writer:  # a run that marks its start (SessionLog.START)
        for step in range(1, 21):
            writer.file_writer.add_summary(scalar_pb("eval/acc", float(step)), step)
    with SummaryWriter(tmp_path, purge_step=11) as writer:  # resumed from step 11: 11-20 are superseded
        for step in range(11, 16):
            writer.add_scalar("eval/acc", 100.0 + step, step)
    history, _ = load_run(tmp_path)
    assert history.steps("eval/acc").tolist() == list(range(1, 16))
    assert history.values("eval/acc").tolist() == [*map(float, range(1, 11)), *(100.0 + s for s in range(11, 16))]


def test_tensorboard_reader_names_the_extra_when_tensorboard_is_missing(tmp_path, monkeypatch):
    (tmp_path / "events.out.tfevents.1.host").write_bytes(b"")
    monkeypatch.setitem(sys.modules, "tensorboard.backend.event_processing", None)
    with pytest.raises(ImportError, match=r"phasetrain\[tensorboard\]") as error:
        load_run(tmp_path)
    assert str(tmp_path) in str(error.value)


def test_long_csv_from_phasetrains_csv_logger_and_by_hand(tmp_path):
    from phasetrain.run.streams import CSVLogger

    with CSVLogger(tmp_path / "run" / "metrics.csv") as logger:
        for step, value in zip(STEPS, VALUES):
            logger.log(step, {"val_acc": value, "train_loss": 1.0 / step})
    history, meta = load_run(tmp_path / "run")
    assert meta["format"] == "csv" and "config" not in meta
    assert history.values("val_acc").tolist() == VALUES
    assert_jump_found(history, "val_acc")

    by_hand = tmp_path / "long.csv"
    by_hand.write_text("step,metric,value\n1,loss,2.0\n,loss,9.0\n2,loss,oops\n2,loss,1.5\n3,loss,nan\n2,acc,0.5\n")
    history, meta = load_run(by_hand)
    assert history.steps("loss").tolist() == [1, 2, 3]
    assert history.values("loss")[:2].tolist() == [2.0, 1.5] and np.isnan(history.values("loss")[2])
    assert history.values("acc").tolist() == [0.5]
    assert meta["skipped"] == {"rows_without_step": 1, "non_numeric_values": 1}


def test_wide_csv_with_gaps_text_rows_without_a_step_and_repeated_steps(tmp_path):
    path = tmp_path / "export.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["Step", "train/loss", "eval_accuracy", "note"])
        for step, value in zip(STEPS, VALUES):
            writer.writerow([step, 1.0 / step, value if step % 4 == 0 else "", "ok"])
        writer.writerow(["", 5.0, 5.0, "no step"])
        writer.writerow([400, 0.25, 0.75, "repeated: the last one wins"])
    history, meta = load_run(path)
    assert meta["format"] == "csv"
    assert history.names() == ["train/loss", "eval_accuracy"]  # the text column has no number
    assert history.steps("eval_accuracy").tolist() == [s for s in STEPS if s % 4 == 0]
    assert (history.last("train/loss"), history.last("eval_accuracy")) == (0.25, 0.75)
    assert meta["skipped"]["rows_without_step"] == 1
    assert meta["skipped"]["non_numeric_values"] == len(STEPS) + 1  # "ok" and the last row's note
    assert_jump_found(history, "eval_accuracy")


def test_lightning_csv_logger_version_folder_with_its_hyper_parameters(tmp_path):
    from lightning.pytorch.loggers import CSVLogger

    logger = CSVLogger(tmp_path, name="grok")
    logger.log_hyperparams({"weight_decay": 0.3, "optimizer": {"name": "adamw", "lr": 1e-3}})
    for step, value in zip(STEPS, VALUES):
        logger.log_metrics({"val_acc": value, "epoch": step // 50}, step=step)
        if step % 10 == 0:
            logger.log_metrics({"train_loss_step": 1.0 / step}, step=step)
    logger.save()
    folder = tmp_path / "grok" / "version_0"
    assert detect_format(folder) == detect_format(folder / "metrics.csv") == "lightning"
    history, meta = load_run(folder)
    assert meta["config"] == {"weight_decay": 0.3, "optimizer.name": "adamw", "optimizer.lr": 1e-3}
    assert history.steps("val_acc").tolist() == STEPS
    assert history.steps("train_loss_step").tolist() == list(range(10, 401, 10))
    assert_jump_found(history, "val_acc")


def test_lightning_version_folder_without_hparams_yaml_reads_as_lightning_without_a_config(tmp_path):
    from lightning.pytorch.loggers import CSVLogger

    logger = CSVLogger(tmp_path, name="")  # no log_hyperparams: a module that never calls save_hyperparameters()
    for step, value in zip(STEPS, VALUES):
        logger.log_metrics({"val_acc": value, "epoch": step // 50}, step=step)
    logger.finalize("success")
    folder = tmp_path / "version_0"
    assert not (folder / "hparams.yaml").exists()
    assert detect_format(folder) == detect_format(folder / "metrics.csv") == "lightning"
    for path, format in ((folder, "lightning"), (folder, "auto"), (folder / "metrics.csv", "lightning")):
        history, meta = load_run(path, format=format)
        assert meta["format"] == "lightning" and "config" not in meta
        assert history.steps("val_acc").tolist() == STEPS
    assert_jump_found(history, "val_acc")
    elsewhere = tmp_path / "export" / "metrics.csv"  # the same file outside a CSVLogger folder is a plain CSV
    elsewhere.parent.mkdir()
    elsewhere.write_bytes((folder / "metrics.csv").read_bytes())
    assert detect_format(elsewhere.parent) == detect_format(elsewhere) == "csv"


def test_a_real_lightning_training_run_is_read_with_its_logged_names(tmp_path):
    import lightning.pytorch as pl
    import torch
    from lightning.pytorch.loggers import CSVLogger

    class Module(pl.LightningModule):
        def __init__(self, lr=0.05):
            super().__init__()
            self.save_hyperparameters()
            self.layer = torch.nn.Linear(2, 1)

        def training_step(self, batch, _):
            x, y = batch
            loss = torch.nn.functional.mse_loss(self.layer(x).squeeze(-1), y)
            self.log("train/loss", loss)
            return loss

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)

    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    loader = torch.utils.data.DataLoader(list(zip(x, x.sum(1))), batch_size=8)
    trainer = pl.Trainer(max_epochs=3, logger=CSVLogger(tmp_path), log_every_n_steps=2, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    trainer.fit(Module(), loader)
    history, meta = load_run(tmp_path / "lightning_logs" / "version_0")
    assert meta["format"] == "lightning" and meta["config"] == {"lr": 0.05}
    assert history.steps("train/loss").tolist() == list(range(1, 24, 2))  # Lightning's 0-based global_step
    assert history.values("train/loss")[-1] < history.values("train/loss")[0]


HF_JUMP = 80


@pytest.fixture(scope="module")
def hf_output(tmp_path_factory):
    """A Hugging Face Trainer run on a tiny torch module (no downloads): 120 steps, a logged
    `probe` that jumps at step HF_JUMP, checkpoints at 50, 100, 120, and `save_state()` at the top."""
    import torch
    from transformers import Trainer, TrainerCallback, TrainingArguments

    class Regressor(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(2, 1)

        def forward(self, x, labels=None):
            out = self.layer(x).squeeze(-1)
            return {"loss": ((out - labels) ** 2).mean(), "logits": out}

    class Probe(TrainerCallback):
        trainer = None

        def on_step_end(self, args, state, control, **kwargs):
            value = jump_curve([state.global_step], seed=state.global_step, at=HF_JUMP)[0]
            self.trainer.log({"probe": float(value)})
            control.should_log = True  # Trainer.log clears it; the step's own loss record still follows
            return control

    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    data = [{"x": x[i], "labels": x[i].sum()} for i in range(64)]
    out = tmp_path_factory.mktemp("hf") / "out"
    args = TrainingArguments(output_dir=str(out), max_steps=120, per_device_train_batch_size=8, logging_steps=1,
                             save_steps=50, save_only_model=True, report_to=[], use_cpu=True, disable_tqdm=True,
                             learning_rate=0.01)
    probe = Probe()
    trainer = Trainer(model=Regressor(), args=args, train_dataset=data, callbacks=[probe])
    probe.trainer = trainer
    trainer.train()
    return out, trainer


def test_hugging_face_output_folder_uses_the_newest_checkpoints_trainer_state(hf_output):
    out, _ = hf_output
    assert not (out / "trainer_state.json").exists()
    history, meta = load_run(out)
    assert meta["format"] == "huggingface"
    assert meta["state_file"] == str(out / "checkpoint-120" / "trainer_state.json")
    assert {"loss", "learning_rate", "grad_norm", "probe", "epoch"} <= set(history.names())
    assert history.steps("loss").tolist() == list(range(1, 121))
    assert "train_summary" not in meta  # written after the last checkpoint
    assert meta["config"]["train_batch_size"] == 8 and meta["config"]["max_steps"] == 120
    assert history.steps("probe").tolist() == list(range(1, 121))
    assert_jump_found(history, "probe", at=HF_JUMP, tolerance=3)


def test_hugging_face_top_level_trainer_state_wins_and_the_json_file_reads_alone(hf_output):
    out, trainer = hf_output
    trainer.save_state()
    try:
        history, meta = load_run(out)
        assert meta["state_file"] == str(out / "trainer_state.json")
        assert "train_runtime" not in history and meta["train_summary"]["train_runtime"] > 0
        alone, _ = load_run(out / "checkpoint-50" / "trainer_state.json")
        assert alone.last_step("loss") == 50 and history.last_step("loss") == 120
    finally:
        (out / "trainer_state.json").unlink()


def test_jsonl_from_phasetrains_stream_and_a_hand_written_file(tmp_path):
    from phasetrain.run.streams import JsonlLogger

    with JsonlLogger(tmp_path / "run" / "metrics.jsonl") as logger:
        for step, value in zip(STEPS, VALUES):
            logger.log(step, {"val_acc": value, "grad_norm": float("inf") if step == 4 else 1.0})
    history, meta = load_run(tmp_path / "run")
    assert meta["format"] == "jsonl"
    assert np.isnan(history.values("grad_norm")[1])  # null: a non-finite value, kept as NaN
    assert_jump_found(history, "val_acc")

    path = tmp_path / "log.jsonl"
    path.write_text(
        '{"step": 1, "train": {"loss": 2.0}, "tag": "a", "done": false}\n'
        '\n{"epoch": 1, "train": {"loss": 7.0}}\n[1, 2]\n'
        '{"step": 2, "train": {"loss": 1.0}}\n{"step": 2, "train": {"loss": 0.5}}\n{"step": 3, "train": {"lo'
    )
    history, meta = load_run(path)
    assert history.names() == ["train/loss"]
    assert history.steps("train/loss").tolist() == [1, 2] and history.values("train/loss").tolist() == [2.0, 0.5]
    assert meta["skipped"] == {"rows_without_step": 3, "non_numeric_values": 2}


def test_phasetrain_run_folder_and_metrics_json_read_as_load_metrics_does(tmp_path):
    history = MetricHistory()
    for step, value in zip(STEPS, VALUES):
        history.log(step, {"val_acc": value})
    save_metrics(tmp_path / "metrics.json", history, {"config": {"weight_decay": 1.0}})
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "other": 1}\n')  # the folder's own stream: not read
    for path in (tmp_path, tmp_path / "metrics.json"):
        loaded, meta = load_run(path)
        assert loaded.to_dict() == load_metrics(tmp_path)[0].to_dict()
        assert meta["format"] == "phasetrain" and meta["config"] == {"weight_decay": 1.0}
    assert_jump_found(loaded, "val_acc")


def test_an_unrecognised_path_is_refused_naming_it_and_listing_every_format(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    for path in (tmp_path, tmp_path / "notes.txt"):
        with pytest.raises(ValueError) as error:
            load_run(path)
        message = str(error.value)
        assert repr(str(path)) in message and all(f"{name}: " in message for name in FORMATS)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_run(tmp_path / "nowhere")


def test_bad_files_and_arguments_are_refused_with_what_is_wrong(tmp_path):
    wide = tmp_path / "wide.csv"
    wide.write_text("epoch,loss\n1,2.0\n")
    with pytest.raises(ValueError, match=r"wide\.csv.*no step column.*step, global_step, _step.*epoch,loss"):
        load_run(wide)
    no_numbers = tmp_path / "empty.jsonl"
    no_numbers.write_text('{"step": 1, "tag": "x"}\n')
    with pytest.raises(ValueError, match=r"empty\.jsonl.*no numeric record"):
        load_run(no_numbers)
    other_json = tmp_path / "state.json"
    other_json.write_text('{"a": 1}')
    with pytest.raises(ValueError, match="is not a run phasetrain can read"):
        load_run(other_json)
    with pytest.raises(ValueError, match=r"format must be 'auto' or one of 'phasetrain'.*got 'excel'"):
        load_run(wide, format="excel")


def test_format_can_be_named_instead_of_recognised(tmp_path):
    path = tmp_path / "log.txt"
    path.write_text('{"step": 5, "loss": 1.0}\n')
    history, meta = load_run(path, format="jsonl")
    assert meta["format"] == "jsonl" and history.steps("loss").tolist() == [5]


def test_reading_csv_jsonl_and_tensorboard_does_not_import_torch(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(tmp_path / "tb") as writer:
        writer.add_scalar("loss", 1.0, 1)
    (tmp_path / "m.csv").write_text("step,loss\n1,2.0\n")
    (tmp_path / "m.jsonl").write_text('{"step": 1, "loss": 2.0}\n')
    code = (
        "import sys; from phasetrain.run.sources import load_run\n"
        f"for p in ('tb', 'm.csv', 'm.jsonl'): load_run({str(tmp_path)!r} + '/' + p)\n"
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    done = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_json_written_by_another_tool_says_it_is_not_json_when_broken(tmp_path):
    path = tmp_path / "trainer_state.json"
    path.write_text('{"log_history": [')
    with pytest.raises(ValueError, match=r"trainer_state\.json.*not valid JSON"):
        load_run(path)
    path.write_text(json.dumps({"log_history": [{"loss": 1.0}]}))
    with pytest.raises(ValueError, match="no numeric record with a step"):
        load_run(path)
