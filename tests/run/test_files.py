"""atomic_write under I/O faults, umask, stale temp files, log_dir checks."""
from __future__ import annotations

import errno
import os
import stat

import pytest
import torch

from phasetrain.run import files
from phasetrain.run.checkpoints import load_checkpoint_file, save_checkpoint
from phasetrain.run.files import atomic_write, check_log_dir, prepare_log_dir, remove_stale_temp_files


def disk_full(f):
    f.write(b"partial")
    raise OSError(errno.ENOSPC, "No space left on device")


def test_disk_full_is_one_oserror_naming_the_file_with_its_errno_and_the_old_file_survives(tmp_path):
    path = tmp_path / "checkpoint_step_1.pt"
    save_checkpoint(path, {"step": 1})
    with pytest.raises(OSError) as raised:
        atomic_write(path, disk_full)
    assert raised.value.errno == errno.ENOSPC
    assert str(path) in str(raised.value) and "No space left" in str(raised.value)
    assert load_checkpoint_file(path)["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_torch_save_failing_mid_write_surfaces_the_hidden_enospc(tmp_path, monkeypatch):
    """torch.save reports a failed write as RuntimeError('... unexpected pos ...') with the OSError as context."""
    path = tmp_path / "final_model.pt"
    save_checkpoint(path, {"step": 5, "model": {"w": torch.ones(3)}})

    def torch_like(f):
        try:
            f.write(b"PK\x03\x04")
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")

    with pytest.raises(OSError) as raised:
        atomic_write(path, torch_like)
    assert raised.value.errno == errno.ENOSPC and str(path) in str(raised.value)
    assert isinstance(raised.value.__cause__, RuntimeError)  # the original is kept, not replaced
    assert torch.equal(load_checkpoint_file(path)["model"]["w"], torch.ones(3))


def test_real_torch_save_into_a_failing_file_gives_the_errno(tmp_path):
    path = tmp_path / "checkpoint_step_2.pt"

    class FullDisk:
        def __init__(self, f):
            self.f = f

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        def flush(self):
            pass

    with pytest.raises(OSError) as raised:
        atomic_write(path, lambda f: torch.save({"w": torch.randn(1000)}, FullDisk(f)))
    assert raised.value.errno == errno.ENOSPC and str(path) in str(raised.value)
    assert list(tmp_path.iterdir()) == []


def test_a_failing_cleanup_never_masks_the_write_error(tmp_path, monkeypatch):
    def unlink_fails(path, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(files.os, "unlink", unlink_fails)
    with pytest.raises(OSError) as raised:
        atomic_write(tmp_path / "metrics.json", disk_full)
    assert raised.value.errno == errno.ENOSPC and "metrics.json" in str(raised.value)


def test_a_bug_in_the_writer_is_not_turned_into_an_oserror(tmp_path):
    with pytest.raises(ZeroDivisionError):
        atomic_write(tmp_path / "metrics.json", lambda f: 1 / 0)
    assert list(tmp_path.iterdir()) == []


def test_temp_file_creation_failing_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError) as raised:
        atomic_write(tmp_path / "missing_folder" / "metrics.json", lambda f: f.write(b"{}"))
    assert raised.value.errno == errno.ENOENT and "missing_folder" in str(raised.value)


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_files_honour_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        atomic_write(tmp_path / "metrics.json", lambda f: f.write(b"{}"))
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "metrics.json").stat().st_mode) == 0o666 & ~umask


def test_current_umask_reads_without_changing(tmp_path):
    old = os.umask(0o027)
    try:
        assert files.current_umask() == 0o027
        assert files.current_umask() == 0o027
    finally:
        os.umask(old)


def test_remove_stale_temp_files_takes_only_phasetrain_temp_files(tmp_path):
    stale = [".checkpoint_step_40.pt.k2j4_x9a.tmp", ".metrics.json.abcdefgh.tmp", ".final_model.pt.0a1b2c3d.tmp",
             ".metrics.jsonl.zzzzzzzz.tmp", ".run.json.qwertyui.tmp"]
    kept = ["notes.tmp", ".mydata.csv.abcdefgh.tmp", ".metrics.json.tmp", "checkpoint_step_40.pt", "x.abcdefgh.tmp",
            ".checkpoint_step_4.pt.abc.tmp"]
    for name in stale + kept:
        (tmp_path / name).write_bytes(b"x")
    removed = remove_stale_temp_files(tmp_path)
    assert sorted(p.name for p in removed) == sorted(stale)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(kept)
    assert remove_stale_temp_files(tmp_path / "absent") == []


def test_the_temp_files_atomic_write_makes_match_the_stale_pattern(tmp_path):
    """A write killed mid-way leaves exactly the kind of file remove_stale_temp_files removes."""
    seen = []

    def killed(f):
        seen.extend(p.name for p in tmp_path.iterdir())
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(tmp_path / "checkpoint_step_7.pt", killed)
    (tmp_path / seen[0]).write_bytes(b"left behind")  # as if the process had been SIGKILLed
    assert [p.name for p in remove_stale_temp_files(tmp_path)] == seen


@pytest.mark.parametrize("value", [123, None, b"runs", 1.5, ["runs"]])
def test_check_log_dir_names_log_dir_and_the_value(value):
    with pytest.raises(TypeError) as raised:
        check_log_dir(value)
    assert "log_dir" in str(raised.value) and repr(value) in str(raised.value)


def test_check_log_dir_accepts_paths_and_refuses_empty(tmp_path):
    assert check_log_dir(str(tmp_path)) == tmp_path == check_log_dir(tmp_path)
    with pytest.raises(ValueError, match="log_dir"):
        check_log_dir("")
    with pytest.raises(TypeError, match="log_dir"):
        prepare_log_dir(123)


def test_a_non_io_error_raised_while_handling_an_oserror_stays_itself(tmp_path):
    def writer(f):
        try:
            raise FileNotFoundError("an optional file the writer looked for")
        except FileNotFoundError:
            raise ValueError("bad value")

    with pytest.raises(ValueError, match="bad value"):
        atomic_write(tmp_path / "metrics.json", writer)
