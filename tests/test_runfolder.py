"""Tests of largead.runfolder: the run lock, checkpoint manifests and their verification, the losses log, write-error
messages, stale temporaries, pruning. (End-to-end faults on the tiny pretraining config: tests/training/test_faults.py;
the accelerate side: tests/test_trainer.py.)"""

from __future__ import annotations

import errno
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from largead import runfolder as R

# ---------------------------------------------------------------------------------------------------------- lock

_HOLD = """
import sys, time
from largead.runfolder import RunLock
lock = RunLock.acquire(sys.argv[1])
print("locked", flush=True)
time.sleep(120)
"""


def _holder(folder: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(folder)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_lock_refuses_a_second_holder_naming_the_first(tmp_path):
    proc = _holder(tmp_path / "run")
    try:
        info = json.loads((tmp_path / "run" / R.LOCK_FILE).read_text())
        assert info["pid"] == proc.pid and info["host"] and info["started"] > 0
        with pytest.raises(R.RunLockedError, match=rf"in use by another run \(pid {proc.pid} on host "):
            R.RunLock.acquire(tmp_path / "run")
    finally:
        proc.kill()
        proc.wait()
    # killed: the OS released the lock; the file it left names the dead holder
    lock = R.RunLock.acquire(tmp_path / "run")
    assert lock.previous is not None and lock.previous["pid"] == proc.pid
    assert json.loads((tmp_path / "run" / R.LOCK_FILE).read_text())["pid"] == os.getpid()
    lock.release()
    assert not (tmp_path / "run" / R.LOCK_FILE).exists()  # a clean release leaves nothing
    again = R.RunLock.acquire(tmp_path / "run")
    assert again.previous is None
    # flock is per open file: a second acquisition in the same process is refused too
    with pytest.raises(R.RunLockedError, match=f"pid {os.getpid()}"):
        R.RunLock.acquire(tmp_path / "run")
    again.release()


def test_lock_on_a_file_is_a_clear_error(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(NotADirectoryError, match="is a file, not a folder"):
        R.RunLock.acquire(tmp_path / "f")


# ----------------------------------------------------------------------------------------------------- manifests


def _checkpoint(folder: Path) -> Path:
    """A checkpoint-like folder: a safetensors file, a torch pickle of tensors, an RNG state, a JSON state."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True)
    save_file({"w": torch.arange(100.0)}, str(folder / "model.safetensors"))
    torch.save({"state": {0: {"momentum_buffer": torch.ones(100)}}, "param_groups": [{"lr": 0.1, "params": [0]}]},
               folder / "optimizer.bin")
    import random

    import numpy as np

    torch.save({"step": 0, "random_state": random.getstate(), "numpy_random_seed": np.random.get_state(),
                "torch_manual_seed": torch.get_rng_state()}, folder / "random_states_0.pkl")
    (folder / "custom_state_0.json").write_text(json.dumps({"last_epoch": 3}))
    R.write_manifest(folder, step=3)
    return folder


def test_manifest_records_every_file_and_verifies(tmp_path):
    folder = _checkpoint(tmp_path / "checkpoint-3")
    manifest = R.verify_checkpoint(folder)
    assert set(manifest["files"]) == {"model.safetensors", "optimizer.bin", "random_states_0.pkl",
                                      "custom_state_0.json"}
    assert manifest["step"] == 3 and manifest["processes"] == 1
    import hashlib

    data = (folder / "optimizer.bin").read_bytes()  # independent oracle: hashlib over the bytes
    assert manifest["files"]["optimizer.bin"] == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert R.checkpoint_size(folder) == sum(p.stat().st_size for p in folder.iterdir() if p.name != "manifest.json")


@pytest.mark.parametrize("name", ["model.safetensors", "optimizer.bin", "random_states_0.pkl", "custom_state_0.json"])
@pytest.mark.parametrize("how,reason", [("truncated", r"has \d+ bytes, the manifest says \d+ \(truncated\)"),
                                        ("zeroed", "does not match its checksum"),
                                        ("flipped", "does not match its checksum"),
                                        ("removed", "is missing")])
def test_each_damaged_file_fails_verification(tmp_path, name, how, reason, damage):
    folder = _checkpoint(tmp_path / "checkpoint-3")
    damage(folder / name, how)
    with pytest.raises(R.CheckpointError, match=rf"^{name} {reason}"):
        R.verify_checkpoint(folder)


def test_incomplete_folders_fail_verification(tmp_path):
    empty = tmp_path / "checkpoint-1"
    empty.mkdir()
    with pytest.raises(R.CheckpointError, match="the folder is empty"):
        R.verify_checkpoint(empty)
    folder = _checkpoint(tmp_path / "checkpoint-3")
    (folder / "manifest.json").write_text('{"files": ')
    with pytest.raises(R.CheckpointError, match="manifest.json is unreadable"):
        R.verify_checkpoint(folder)
    (folder / "manifest.json").unlink()
    with pytest.raises(R.CheckpointError, match="no manifest.json"):
        R.verify_checkpoint(folder)
    R.write_manifest(folder, 3)
    (folder / "extra.bin").write_bytes(b"x")
    with pytest.raises(R.CheckpointError, match="extra.bin is not in the manifest"):
        R.verify_checkpoint(folder)


class _Poison:
    """Unpickling this object writes a marker file (what a malicious checkpoint would do, harmlessly)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


@pytest.mark.parametrize("name", ["optimizer.bin", "random_states_0.pkl", "custom_checkpoint_0.pkl"])
def test_poisoned_pickle_is_refused_without_running_it(tmp_path, name):
    marker = tmp_path / "marker"
    poison = pickle.dumps(_Poison(marker))
    # the poison is real: a plain unpickler runs it
    pickle.loads(poison)
    assert marker.read_text() == "pwned"
    marker.unlink()

    folder = _checkpoint(tmp_path / "checkpoint-3")
    torch.save(_Poison(marker), folder / name)  # as accelerate writes these files (a torch zip archive)
    assert not marker.exists()
    R.write_manifest(folder, 3)  # an attacker can rewrite the manifest too: the checksums still pass
    expected = "pickled custom state.*refused" if name.startswith("custom") else "cannot be loaded as plain tensor data"
    with pytest.raises(R.CheckpointError, match=rf"^{name} .*{expected}") as info:
        R.verify_checkpoint(folder)
    assert not marker.exists()
    if not name.startswith("custom"):
        assert "nothing in it was run" in str(info.value) and "exec" in str(info.value)  # names the refused global


def test_write_manifest_fsyncs_files_and_folder(tmp_path, monkeypatch):
    folder = _checkpoint(tmp_path / "checkpoint-3")
    synced = []
    monkeypatch.setattr(R, "fsync_path", lambda p: synced.append(Path(p).name))
    R.write_manifest(folder, 3)
    assert set(synced[:4]) == {"model.safetensors", "optimizer.bin", "random_states_0.pkl", "custom_state_0.json"}
    assert synced[4:] == ["manifest.json", "checkpoint-3"]  # the manifest after the data, then the folder entry


# --------------------------------------------------------------------------------------------------- losses log


def _lines(*steps: int) -> str:
    return "".join(json.dumps({"step": s, "loss": 1.0 / s}) + "\n" for s in steps)


def test_losses_log_drops_a_torn_last_line_and_says_so(tmp_path):
    path = tmp_path / "losses.jsonl"
    path.write_text(_lines(1, 2, 3) + '{"step": 4, "lo')
    said = []
    log = R.LossLog(path, resume_step=3, report=said.append)
    assert [r["step"] for r in log.records] == [1, 2, 3]
    assert len(said) == 1 and "dropped a torn last line (15 bytes" in said[0] and str(path) in said[0]
    assert path.read_text().endswith('"lo')  # nothing is written before the run's first step
    log.append({"step": 4, "loss": 0.25})
    log.close()
    assert path.read_text() == _lines(1, 2, 3, 4)


def test_losses_log_keeps_steps_up_to_the_checkpoint_and_rewrites_atomically(tmp_path):
    path = tmp_path / "losses.jsonl"
    path.write_text(_lines(1, 2, 3, 4, 5))
    inode = path.stat().st_ino
    log = R.LossLog(path, resume_step=3)
    assert [r["step"] for r in log.records] == [1, 2, 3] and path.read_text() == _lines(1, 2, 3, 4, 5)
    log.append({"step": 4, "loss": 0.25})
    log.close()
    assert path.read_text() == _lines(1, 2, 3, 4)
    assert path.stat().st_ino != inode  # replaced by a rename, never truncated in place


def test_losses_log_unchanged_is_not_rewritten_and_bad_middle_line_is_an_error(tmp_path):
    path = tmp_path / "losses.jsonl"
    path.write_text(_lines(1, 2))
    inode = path.stat().st_ino
    log = R.LossLog(path, resume_step=2)
    log.append({"step": 3, "loss": 1 / 3})
    log.close()
    assert path.stat().st_ino == inode and path.read_text() == _lines(1, 2, 3)
    path.write_text(_lines(1) + "garbage\n" + _lines(3))
    with pytest.raises(ValueError, match=r"losses.jsonl: line 2 is not a step record"):
        R.LossLog(path, resume_step=3)
    reader = R.LossLog(tmp_path / "other.jsonl", write=False)
    reader.append({"step": 1, "loss": 1.0})
    assert not (tmp_path / "other.jsonl").exists() and reader.records == [{"step": 1, "loss": 1.0}]


# ------------------------------------------------------------------------------------------------- write errors


@pytest.mark.parametrize("err,start", [
    (OSError(errno.ENOSPC, "No space left on device"), "no space left on /out while writing checkpoint 4;"),
    (OSError(errno.EDQUOT, "Disk quota exceeded"), "no space left on /out while writing checkpoint 4;"),
    (RuntimeError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left on '
                  'device" })'), "no space left on /out"),  # safetensors' wrapping
    (OSError(errno.EROFS, "Read-only file system"), "cannot write to /out (read-only file system) while writing"),
    (PermissionError(errno.EACCES, "Permission denied"), "cannot write to /out (permission denied) while"),
    (ValueError("boom"), "writing checkpoint 4 to /out failed (ValueError: boom);"),
])
def test_write_errors_are_one_line_naming_what_is_intact(err, start):
    msg = R.describe_write_error(err, "/out", "checkpoint 4", "the previous checkpoint checkpoint-3 is intact")
    assert msg.startswith(start) and msg.endswith("the previous checkpoint checkpoint-3 is intact")
    assert "\n" not in msg


def test_torch_unexpected_pos_counts_as_full_only_when_the_disk_is_full(monkeypatch, tmp_path):
    err = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")
    assert R.describe_write_error(err, tmp_path, "x", "ok").startswith("writing x to")
    import shutil

    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(100, 100, 0))
    assert R.describe_write_error(err, tmp_path, "x", "ok").startswith(f"no space left on {tmp_path}")


# --------------------------------------------------------------------------------------- temporaries and pruning


def test_stale_temporaries_are_removed_and_nothing_else(tmp_path):
    out = tmp_path / "run"
    keep = ["encoder/config.json", "checkpoints/checkpoint-2/x", "losses.jsonl", "segment_cache/a/.b.npz", ".hidden"]
    stale = ["checkpoints/.tmp-checkpoint-3/model.safetensors", "checkpoints/.old-checkpoint-1/x",
             ".encoder.tmp-123/model.safetensors", ".encoder.old-77/y", ".losses.jsonl.abc123.jsonl",
             ".model.tmp-5/z"]
    for rel in keep + stale:
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_bytes(b"12345")
    removed = R.remove_stale_temporaries(out)
    assert sorted(str(p.relative_to(out)) for p, _ in removed) == sorted(
        ["checkpoints/.tmp-checkpoint-3", "checkpoints/.old-checkpoint-1", ".encoder.tmp-123", ".encoder.old-77",
         ".losses.jsonl.abc123.jsonl", ".model.tmp-5"])
    assert sum(b for _, b in removed) == 5 * len(stale)
    assert all((out / rel).exists() for rel in keep)


def test_prune_keeps_the_newest_and_drops_the_stale_future(tmp_path):
    for s in (1, 2, 3, 5, 6):
        (tmp_path / "checkpoints" / f"checkpoint-{s}").mkdir(parents=True)
    (tmp_path / "checkpoints" / "checkpoint-x").mkdir()
    removed = R.prune_checkpoints(tmp_path, keep=2, current_step=3)
    assert sorted(p.name for p in removed) == ["checkpoint-1", "checkpoint-5", "checkpoint-6"]
    assert [s for s, _ in R.list_checkpoints(tmp_path)] == [2, 3]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["checkpoint-2", "checkpoint-3",
                                                                            "checkpoint-x"]
    R.prune_checkpoints(tmp_path, keep=None)
    assert [s for s, _ in R.list_checkpoints(tmp_path)] == [2, 3]
    R.prune_checkpoints(tmp_path, keep=0)
    assert R.list_checkpoints(tmp_path) == []


def test_killed_holder_leaves_a_lock_that_is_reported(tmp_path):
    proc = _holder(tmp_path / "run")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(0.05)
    lock = R.RunLock.acquire(tmp_path / "run")
    assert f"pid {proc.pid} on host " in R.describe_holder(lock.previous)
    lock.release()


def test_a_checkpoint_from_before_manifests_can_be_adopted(tmp_path):
    import random

    import numpy as np

    folder = tmp_path / "checkpoint-7"  # as accelerate wrote it, with the scheduler pickled
    folder.mkdir()
    torch.save({"state": {}, "param_groups": [{"lr": 0.1, "params": [0]}]}, folder / "optimizer.bin")
    torch.save({"step": 0, "random_state": random.getstate(), "numpy_random_seed": np.random.get_state(),
                "torch_manual_seed": torch.get_rng_state()}, folder / "random_states_0.pkl")
    sched = {"base_lrs": [0.5], "last_epoch": 7, "_last_lr": [0.25], "lr_lambdas": [None]}
    torch.save(sched, folder / "custom_checkpoint_0.pkl")
    with pytest.raises(R.CheckpointError, match="adopt_checkpoint"):
        R.verify_checkpoint(folder)
    manifest = R.adopt_checkpoint(folder)
    assert manifest["step"] == 7 and set(manifest["files"]) == {"optimizer.bin", "random_states_0.pkl",
                                                                "custom_state_0.json"}
    assert json.loads((folder / "custom_state_0.json").read_text()) == sched
    R.verify_checkpoint(folder)
    marker = tmp_path / "marker"
    bad = tmp_path / "checkpoint-8"
    bad.mkdir()
    torch.save(_Poison(marker), bad / "custom_checkpoint_0.pkl")
    with pytest.raises(R.CheckpointError, match="custom_checkpoint_0.pkl: not plain data, refused"):
        R.adopt_checkpoint(bad)
    assert not marker.exists() and not (bad / "manifest.json").exists()
