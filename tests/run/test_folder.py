"""open_run_folder: the start-of-run sequence (check, lock, clean temp files, claim or read the owner)."""
from __future__ import annotations

import json

import pytest

from phasetrain.run.folder import open_run_folder
from phasetrain.run.lock import LOCK_FILE, RunFolderLocked, RunLock
from phasetrain.run.ownership import RunFolderInUse, claim_folder


def test_a_new_run_claims_an_empty_folder_and_holds_its_lock(tmp_path):
    folder = open_run_folder(tmp_path / "run", resuming=False)
    try:
        assert json.loads((tmp_path / "run" / "run.json").read_text())["run_id"] == folder.run_id
        with pytest.raises(RunFolderLocked):
            RunLock(tmp_path / "run").acquire()
    finally:
        folder.close()
    assert not (tmp_path / "run" / LOCK_FILE).exists()


def test_a_new_run_is_refused_in_a_used_folder_and_leaves_it_untouched(tmp_path):
    claim_folder(tmp_path, "old")
    (tmp_path / "metrics.jsonl").write_text('{"step":1}\n')
    (tmp_path / ".metrics.json.abcdefgh.tmp").write_text("partial")
    with pytest.raises(RunFolderInUse, match="run old"):
        open_run_folder(tmp_path, resuming=False)
    assert (tmp_path / "metrics.jsonl").read_text() == '{"step":1}\n'  # nothing emptied
    RunLock(tmp_path).acquire().release()  # the failed open released the lock


def test_overwrite_clears_the_old_run_and_claims_anew(tmp_path):
    claim_folder(tmp_path, "old")
    (tmp_path / "checkpoint_step_5.pt").write_bytes(b"x")
    (tmp_path / "mine.txt").write_text("keep")
    folder = open_run_folder(tmp_path, resuming=False, overwrite=True)
    folder.close()
    assert sorted(p.name for p in folder.cleared) == ["checkpoint_step_5.pt", "run.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.txt", "run.json"]
    assert folder.run_id != "old"


def test_resuming_reads_the_owner_and_removes_only_temp_files(tmp_path):
    claim_folder(tmp_path, "owner")
    (tmp_path / "checkpoint_step_5.pt").write_bytes(b"x")
    (tmp_path / ".checkpoint_step_10.pt.abcdefgh.tmp").write_bytes(b"partial")
    folder = open_run_folder(tmp_path, resuming=True)
    folder.close()
    assert folder.run_id == "owner"
    assert [p.name for p in folder.removed_temp_files] == [".checkpoint_step_10.pt.abcdefgh.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_step_5.pt", "run.json"]


def test_resuming_a_folder_without_an_owner_adopts_one(tmp_path):
    (tmp_path / "checkpoint_step_5.pt").write_bytes(b"x")
    folder = open_run_folder(tmp_path, resuming=True)
    assert folder.run_id is None
    folder.adopt("from-checkpoint")
    folder.close()
    assert json.loads((tmp_path / "run.json").read_text())["run_id"] == "from-checkpoint"


def test_bad_arguments(tmp_path):
    with pytest.raises(TypeError, match="log_dir"):
        open_run_folder(123, resuming=False)
    with pytest.raises(ValueError, match="overwrite=True .* resume_from"):
        open_run_folder(tmp_path, resuming=True, overwrite=True)
    with pytest.raises(RunFolderLocked), RunLock(tmp_path):
        open_run_folder(tmp_path, resuming=True)
