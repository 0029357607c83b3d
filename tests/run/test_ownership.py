"""Run ids, folders that hold another run's files, overwrite, and checkpoints filtered by run."""
from __future__ import annotations

import json
import re

import pytest
import torch

from phasetrain.run.checkpoints import (
    checkpoint_path,
    checkpoint_run_id,
    latest_checkpoint,
    prune_checkpoints,
    save_checkpoint,
    step_checkpoints,
)
from phasetrain.run.history import MetricHistory, save_metrics
from phasetrain.run.ownership import (
    RunFolderInUse,
    check_folder_free,
    claim_folder,
    clear_run_files,
    folder_run_id,
    new_run_id,
    run_files,
)

RUN_FILES = ["metrics.json", "metrics.jsonl", "metrics.csv", "checkpoint_step_10.pt", "best_model.pt", "final_model.pt",
             "run.json"]


def test_new_run_ids_are_distinct_hex():
    ids = {new_run_id() for _ in range(100)}
    assert len(ids) == 100 and all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)


def test_empty_or_missing_folder_is_free(tmp_path):
    assert check_folder_free(tmp_path) == []
    assert check_folder_free(tmp_path / "new") == []
    (tmp_path / "my_notes.txt").write_text("mine")
    (tmp_path / "data").mkdir()
    assert check_folder_free(tmp_path) == []  # the user's own files are not a run


@pytest.mark.parametrize("name", RUN_FILES + ["tensorboard"])
def test_any_run_file_makes_the_folder_in_use(tmp_path, name):
    if name == "tensorboard":
        (tmp_path / name).mkdir()
    else:
        (tmp_path / name).write_bytes(b"x")
    with pytest.raises(RunFolderInUse) as raised:
        check_folder_free(tmp_path)
    message = str(raised.value)
    for words in (str(tmp_path), name, "new log_dir", "resume_from='latest'", "overwrite=True"):
        assert words in message, (words, message)
    assert isinstance(raised.value, ValueError)


def test_message_names_the_owning_run(tmp_path):
    claim_folder(tmp_path, "abc123")
    with pytest.raises(RunFolderInUse, match="run abc123"):
        check_folder_free(tmp_path)


def test_folder_run_id_from_run_json_then_metrics_meta(tmp_path):
    assert folder_run_id(tmp_path) is None
    save_metrics(tmp_path / "metrics.json", MetricHistory(), {"run_id": "from-meta"})
    assert folder_run_id(tmp_path) == "from-meta"
    claim_folder(tmp_path, "from-run-json")
    assert folder_run_id(tmp_path) == "from-run-json"
    assert json.loads((tmp_path / "run.json").read_text())["run_id"] == "from-run-json"
    (tmp_path / "run.json").write_text("{damaged")
    assert folder_run_id(tmp_path) == "from-meta"


def test_overwrite_clears_all_run_files_and_keeps_the_users(tmp_path):
    for name in RUN_FILES + ["checkpoint_step_20.pt"]:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "tensorboard").mkdir()
    (tmp_path / "tensorboard" / "events.out").write_bytes(b"x")
    mine = ["my_notes.txt", "checkpoint_step_x.pt", "model.pt", "metrics.json.bak", ".phasetrain.lock"]
    for name in mine:
        (tmp_path / name).write_bytes(b"mine")
    (tmp_path / "data").mkdir()
    removed = check_folder_free(tmp_path, overwrite=True)
    assert sorted(p.name for p in removed) == sorted(RUN_FILES + ["checkpoint_step_20.pt", "tensorboard"])
    assert removed[-1].name == "run.json"  # the owner's name goes last
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(mine + ["data"])
    assert check_folder_free(tmp_path) == []


def test_clear_run_files_removes_symlinks_without_following_them(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.pt").write_bytes(b"keep")
    run = tmp_path / "run"
    run.mkdir()
    (run / "final_model.pt").symlink_to(outside / "precious.pt")
    (run / "tensorboard").symlink_to(outside)
    assert {p.name for p in run_files(run)} == {"final_model.pt", "tensorboard"}
    clear_run_files(run)
    assert list(run.iterdir()) == [] and (outside / "precious.pt").read_bytes() == b"keep"


def test_overwrite_must_be_a_bool(tmp_path):
    with pytest.raises(TypeError, match="overwrite"):
        check_folder_free(tmp_path, overwrite="yes")


def save_step(folder, step, run_id):
    payload = {"step": step, "model": {"w": torch.full((2,), float(step))}}
    if run_id is not None:
        payload["run_id"] = run_id
    save_checkpoint(checkpoint_path(folder, step), payload)


def test_latest_checkpoint_sees_only_the_current_runs_files(tmp_path):
    """The old run's higher step never wins over the current run's newest checkpoint."""
    for step in (10, 20, 30, 40):
        save_step(tmp_path, step, "old")
    save_step(tmp_path, 15, "new")
    save_step(tmp_path, 25, None)  # written before run ids existed
    path, checkpoint = latest_checkpoint(tmp_path, run_id="new")
    assert path.name == "checkpoint_step_15.pt" and checkpoint["run_id"] == "new"
    assert latest_checkpoint(tmp_path)[0].name == "checkpoint_step_40.pt"  # no filter: by step alone
    with pytest.raises(FileNotFoundError, match="run nobody"):
        latest_checkpoint(tmp_path, run_id="nobody")


def test_final_model_of_another_run_is_not_taken(tmp_path):
    save_step(tmp_path, 5, "new")
    save_checkpoint(tmp_path / "final_model.pt", {"step": 100, "run_id": "old"})
    assert latest_checkpoint(tmp_path, run_id="new")[0].name == "checkpoint_step_5.pt"


def test_prune_keeps_the_current_runs_newest_and_never_touches_other_runs(tmp_path):
    for step in (100, 200, 300):
        save_step(tmp_path, step, "old")
    for step in (2, 4, 6, 8):
        save_step(tmp_path, step, "new")
        prune_checkpoints(tmp_path, keep=2, run_id="new")
        assert checkpoint_path(tmp_path, step).exists()  # the file just written survives its own prune
    (tmp_path / "checkpoint_step_7.pt").write_bytes(b"\x00garbage")
    deleted = prune_checkpoints(tmp_path, keep=1, run_id="new")
    assert [p.name for p in deleted] == ["checkpoint_step_6.pt"]
    assert [s for s, _ in step_checkpoints(tmp_path)] == [7, 8, 100, 200, 300]
    assert [s for s, _ in step_checkpoints(tmp_path, run_id="old")] == [100, 200, 300]


@pytest.mark.parametrize("keep", [0, -1, 1.5, True, None])
def test_prune_refuses_a_bad_keep(tmp_path, keep):
    with pytest.raises(ValueError, match="keep"):
        prune_checkpoints(tmp_path, keep=keep, run_id="x")


def test_checkpoint_run_id(tmp_path):
    save_step(tmp_path, 1, "abc")
    save_step(tmp_path, 2, None)
    assert checkpoint_run_id(checkpoint_path(tmp_path, 1)) == "abc"
    assert checkpoint_run_id(checkpoint_path(tmp_path, 2)) is None
