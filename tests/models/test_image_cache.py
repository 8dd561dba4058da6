"""The synthetic teacher's on-disk cache (largead.models.image): damaged files are named, bit rot in the weights is
caught by the stored SHA-256, temporaries of killed writers are removed. Kept apart from test_image.py (the teachers)
so the two can change independently."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from largead import fileio
from largead.fileio import CorruptFileError
from largead.models.image import SyntheticTeacher

K = 3


def _data():
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (2, 16, 24, 3)).astype(np.uint8), rng.integers(-1, K, (2, 16, 24))


def _build(folder, data=_data):
    return SyntheticTeacher.build({"test": "cache"}, data, K, cache_dir=folder, steps=1, batch_size=2)


def _never():
    raise AssertionError("the cache was not used")


@pytest.fixture()
def cached(tmp_path):
    teacher = _build(tmp_path)
    return teacher, teacher.cache_path, teacher.cache_path.read_bytes()


def _header_end(data: bytes) -> int:
    return 8 + int.from_bytes(data[:8], "little")


@pytest.mark.parametrize("how", ["empty", "truncated", "zeroed", "header flipped"])
def test_unreadable_cache_names_the_file(cached, how):
    _, path, data = cached
    end = _header_end(data)
    damaged = {"empty": b"", "truncated": data[: end + (len(data) - end) // 2], "zeroed": bytes(len(data)),
               "header flipped": data[:10] + bytes([data[10] ^ 0x7F]) + data[11:]}[how]
    path.write_bytes(damaged)
    with pytest.raises(CorruptFileError, match=rf"{path.name}: cached synthetic teacher is unreadable.*delete it"):
        _build(path.parent, _never)


def test_flipped_weight_byte_is_caught_by_the_digest(cached):
    """safetensors has no checksum of its own: a flipped byte in the tensor data loads without complaint."""
    teacher, path, data = cached
    end = _header_end(data)
    for offset in (end, end + (len(data) - end) // 2, len(data) - 1):
        damaged = bytearray(data)
        damaged[offset] ^= 0x01
        path.write_bytes(bytes(damaged))
        with pytest.raises(CorruptFileError, match=rf"{path.name}: .*do not match their SHA-256"):
            _build(path.parent, _never)
    path.write_bytes(data)  # intact again: read, same weights
    again = _build(path.parent, _never)
    for name, v in teacher.backbone.state_dict().items():
        assert torch.equal(again.backbone.state_dict()[name], v)


def test_digest_is_in_the_metadata_and_old_files_still_load(cached):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    teacher, path, _ = cached
    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata()
    assert len(meta["sha256"]) == 64 and json.loads(meta["settings"])["key"] == {"test": "cache"}
    save_file(load_file(str(path)), str(path), metadata={"settings": meta["settings"]})  # largead <= 0.1's layout
    old = _build(path.parent, _never)
    for name, v in teacher.backbone.state_dict().items():
        assert torch.equal(old.backbone.state_dict()[name], v)


def test_temporary_of_a_dead_writer_is_removed(tmp_path):
    pid = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                             text=True, check=True).stdout)
    stale = tmp_path / f".synthetic-0123.safetensors.tmp-{fileio._HOST}-{pid}-abcd1234.safetensors"
    stale.write_bytes(b"partial")
    teacher = _build(tmp_path)
    assert os.listdir(tmp_path) == [teacher.cache_path.name]
