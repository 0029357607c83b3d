"""Damaged checkpoint files: always a CheckpointError naming the file, never an error from inside torch."""
from __future__ import annotations

import os
import random

import pytest
import torch

from phasetrain.run.checkpoints import CheckpointError, latest_checkpoint, load_checkpoint_file, save_checkpoint


@pytest.fixture(scope="module")
def valid_bytes(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("valid") / "c.pt"
    save_checkpoint(path, {"step": 3, "model": {"w": torch.randn(64), "b": torch.zeros(4)}, "history": {}})
    return path.read_bytes()


def garbage(kind: str, seed: int, valid: bytes) -> bytes:
    rng = random.Random(seed)
    if kind == "random":
        return rng.randbytes(rng.choice([1, 2, 8, rng.randint(1, 4096)]))
    if kind == "truncated":
        return valid[: rng.randint(0, len(valid) - 1)]
    damaged = bytearray(valid)
    for _ in range(rng.randint(1, 30)):
        damaged[rng.randrange(len(damaged))] = rng.randrange(256)
    return bytes(damaged)


@pytest.mark.parametrize("kind", ["random", "truncated", "flipped"])
def test_100_damaged_files_of_each_kind_give_checkpoint_error_or_load(tmp_path, valid_bytes, kind):
    """Random bytes gave IndexError/KeyError/struct.error from inside torch in about 1 case in 10."""
    path = tmp_path / "checkpoint_step_9.pt"
    outcomes = {"loaded": 0, "refused": 0}
    for seed in range(100):
        path.write_bytes(garbage(kind, seed, valid_bytes))
        try:
            load_checkpoint_file(path)
            outcomes["loaded"] += 1  # bytes flipped inside tensor data cannot be noticed: no checksum
        except CheckpointError as error:
            assert str(path) in str(error)
            outcomes["refused"] += 1
    if kind != "flipped":
        assert outcomes == {"loaded": 0, "refused": 100}


@pytest.mark.parametrize("data", [b"", b"\x00", b"\x80", b"PK\x03\x04", os.urandom(2048)])
def test_tiny_and_random_files_say_truncated_not_unsafe(tmp_path, data):
    path = tmp_path / "c.pt"
    path.write_bytes(data)
    with pytest.raises(CheckpointError, match="truncated or not a torch checkpoint"):
        load_checkpoint_file(path)


def test_a_pickle_stream_that_is_garbage_is_not_called_unsafe(tmp_path):
    """torch reports garbage opcodes as 'Weights only load failed'; that is damage, not a refused class."""
    import zipfile

    path = tmp_path / "c.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("c/data.pkl", b"\x80\x02\xff\xfe\xfd")
        archive.writestr("c/version", b"3\n")
        archive.writestr("c/byteorder", b"little")
    with pytest.raises(CheckpointError, match="truncated or not a torch checkpoint") as raised:
        load_checkpoint_file(path)
    assert "arbitrary code" not in str(raised.value)


@pytest.mark.parametrize("kind", ["random", "truncated"])
def test_latest_skips_every_kind_of_garbage_newest_file_with_a_warning(tmp_path, valid_bytes, kind):
    save_checkpoint(tmp_path / "checkpoint_step_10.pt", {"step": 10})
    for seed in range(20):
        (tmp_path / "checkpoint_step_20.pt").write_bytes(garbage(kind, seed, valid_bytes))
        with pytest.warns(RuntimeWarning, match="checkpoint_step_20.pt"):
            path, checkpoint = latest_checkpoint(tmp_path)
        assert path.name == "checkpoint_step_10.pt" and checkpoint["step"] == 10


def test_a_checkpoint_whose_step_is_not_an_int_is_skipped(tmp_path):
    save_checkpoint(tmp_path / "checkpoint_step_10.pt", {"step": 10})
    save_checkpoint(tmp_path / "checkpoint_step_20.pt", {"step": "twenty"})
    save_checkpoint(tmp_path / "checkpoint_step_30.pt", {"nostep": 1})
    with pytest.warns(RuntimeWarning, match="'step'"):
        assert latest_checkpoint(tmp_path)[0].name == "checkpoint_step_10.pt"
