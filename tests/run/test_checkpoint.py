"""Checkpoints: atomic on disk, and never a way to run pickled code."""
from __future__ import annotations

import os
import pickle

import pytest
import torch

from phasetrain.run.checkpoints import CheckpointError, latest_checkpoint, load_checkpoint_file, save_checkpoint
from phasetrain.run.files import atomic_write


def test_round_trip(tmp_path):
    save_checkpoint(tmp_path / "c.pt", {"step": 3, "model": {"w": torch.arange(4.0)}})
    loaded = load_checkpoint_file(tmp_path / "c.pt")
    assert loaded["step"] == 3 and torch.equal(loaded["model"]["w"], torch.arange(4.0))


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint_file(tmp_path / "nope.pt")


def test_truncated_file_is_reported(tmp_path):
    save_checkpoint(tmp_path / "c.pt", {"step": 3, "model": {"w": torch.randn(1000)}})
    data = (tmp_path / "c.pt").read_bytes()
    (tmp_path / "c.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or not a torch checkpoint"):
        load_checkpoint_file(tmp_path / "c.pt")


def test_foreign_torch_file_is_reported(tmp_path):
    torch.save({"w": torch.zeros(2)}, tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match="not a phasetrain checkpoint"):
        load_checkpoint_file(tmp_path / "plain.pt")
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(CheckpointError):
        load_checkpoint_file(tmp_path / "text.pt")


class Exploit:
    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


MARKER = ""


def test_pickle_that_would_run_code_is_refused_and_nothing_runs(tmp_path):
    global MARKER
    MARKER = str(tmp_path / "pwned")
    torch.save({"format": "phasetrain-checkpoint", "version": 1, "step": 1, "payload": Exploit()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="refused .* could run arbitrary code"):
        load_checkpoint_file(tmp_path / "evil.pt")
    assert not os.path.exists(MARKER)
    with open(tmp_path / "evil.pkl", "wb") as f:
        pickle.dump(Exploit(), f)
    with pytest.raises(CheckpointError):
        load_checkpoint_file(tmp_path / "evil.pkl")
    assert not os.path.exists(MARKER)


def test_failed_atomic_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"step": 1})

    def failing_writer(f):
        f.write(b"partial")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        atomic_write(path, failing_writer)
    assert load_checkpoint_file(path)["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pt"]


def test_latest_skips_corrupt_newest_with_a_warning(tmp_path):
    save_checkpoint(tmp_path / "checkpoint_step_10.pt", {"step": 10})
    save_checkpoint(tmp_path / "checkpoint_step_20.pt", {"step": 20})
    (tmp_path / "checkpoint_step_30.pt").write_bytes(b"\x00garbage")
    with pytest.warns(RuntimeWarning, match="checkpoint_step_30.pt"):
        path, checkpoint = latest_checkpoint(tmp_path)
    assert path.name == "checkpoint_step_20.pt" and checkpoint["step"] == 20


def test_latest_prefers_final_when_it_is_newest(tmp_path):
    save_checkpoint(tmp_path / "checkpoint_step_10.pt", {"step": 10})
    save_checkpoint(tmp_path / "final_model.pt", {"step": 12})
    assert latest_checkpoint(tmp_path)[0].name == "final_model.pt"


def test_latest_with_nothing_valid(tmp_path):
    with pytest.raises(FileNotFoundError, match="no valid checkpoint"):
        latest_checkpoint(tmp_path)


def test_symlinked_checkpoints_are_not_followed_out_of_the_run_folder(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    save_checkpoint(outside / "elsewhere.pt", {"step": 99})
    run = tmp_path / "run"
    run.mkdir()
    save_checkpoint(run / "checkpoint_step_5.pt", {"step": 5})
    (run / "checkpoint_step_50.pt").symlink_to(outside / "elsewhere.pt")
    path, checkpoint = latest_checkpoint(run)
    assert path.name == "checkpoint_step_5.pt" and checkpoint["step"] == 5
