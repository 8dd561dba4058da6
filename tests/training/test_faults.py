"""The fault matrix of issue 17 on the tiny pretraining config (``synthetic-tiny``: one sequence of 5 frames, a few
hundred voxels; the backbone is overridden to MinkUNet-14 for speed, the point being the fault handling).

The reference is one uninterrupted 4-step run launched like a user would (``tests/training/faults.py`` wraps
``training/pretrain.py``'s ``cli()``, here with a harmless slow-down so that a second launch can be tried while it
runs). Every other run must end *bit-identical* to it: the same bytes in ``losses.jsonl``, in the exported encoder's
``model.safetensors``, and in the final checkpoint's model, optimiser and scheduler files (their SHA-256 in the
manifest). The RNG states are left out of that comparison: a resumed run draws one more number from torch's global
generator when it builds its data-loader iterator, which changes the saved generator state but nothing computed from
it (the samples' order and augmentations come from per-sample seeds, see ``largead.trainer.sample_rng``).

Faults: SIGKILL at random points (inside each checkpoint file's write, before the manifest, after the rename, while
pruning, mid-line in ``losses.jsonl``, during the encoder export, on a timer), a second launch on the same folder,
checkpoint files truncated / zeroed / removed, a torn ``losses.jsonl``, a full and a read-only output folder, poisoned
pickles, a failed start, a rerun of a finished run. The exhaustive file x damage matrix runs on a toy loop in
``tests/test_trainer.py``; this module checks the same code paths on the real training script.

The kill points are drawn at random (seed from ``LARGEAD_FAULT_SEED``, else from the clock; it is in every assertion
message, so a failure can be replayed).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from largead.runfolder import LOCK_FILE, verify_checkpoint, write_manifest
from largead.training import finetune, pretrain

ROOT = Path(__file__).resolve().parents[2]
FAULTS = Path(__file__).resolve().parent / "faults.py"
ARGS = ["--config", "synthetic-tiny", "model.backbone=minkunet14", "train.steps=4", "train.checkpoint_every=1"]
REF_ARGS = [*ARGS, "train.checkpoint_total_limit=2"]  # keeps checkpoints 3 and 4 for the fallback cases
SEED = int(os.environ.get("LARGEAD_FAULT_SEED", time.time_ns() % 100_000))


def _env(cache: Path, fault: dict | None = None) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LARGEAD_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    env.pop("LARGEAD_FAULT", None)
    if fault is not None:
        env["LARGEAD_FAULT"] = json.dumps(fault)
    return env


def _launch(out: Path, args: list[str], cache: Path, fault: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(FAULTS), "--output-dir", str(out), *args], env=_env(cache, fault),
                          capture_output=True, text=True, timeout=600, check=False)


def _sha(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def _outcome(out: Path, step: int = 4) -> dict:
    """What must be bit-identical: the log, the encoder, the final checkpoint's state files."""
    files = json.loads((out / "checkpoints" / f"checkpoint-{step}" / "manifest.json").read_text())["files"]
    return {"losses": (out / "losses.jsonl").read_bytes(), "encoder": _sha(out / "encoder" / "model.safetensors"),
            "state": {k: v["sha256"] for k, v in files.items() if not k.startswith("random_states")}}


def _leftovers(out: Path) -> list[str]:
    """Hidden files anywhere in the run folder but the segment cache (temporaries, locks)."""
    return sorted(str(p.relative_to(out)) for p in out.rglob(".*") if "segment_cache" not in p.parts)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("largead-cache")  # the synthetic teacher is trained once for the module


@pytest.fixture(scope="module")
def reference(tmp_path_factory, cache):
    """The uninterrupted run (a subprocess, slowed down) and the refused second launch tried while it runs."""
    out = tmp_path_factory.mktemp("reference") / "run"
    cmd = [sys.executable, str(FAULTS), "--output-dir", str(out), *REF_ARGS]
    proc = subprocess.Popen(cmd, env=_env(cache, {"kind": "slow", "delay": 0.4}), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    lock = out / LOCK_FILE
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        try:
            if json.loads(lock.read_text())["pid"] == proc.pid:
                break
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.05)
    second = _cli(pretrain, ["--output-dir", str(out), *REF_ARGS])
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr[-3000:]
    return {"out": out, "pid": proc.pid, "stdout": stdout, "stderr": stderr, "second": second,
            "outcome": _outcome(out)}


def _cli(module, argv: list[str]) -> tuple[int, str, str]:
    """Run an entry point's ``cli`` in this process: ``(exit code, stdout, stderr)``."""
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            module.cli(argv)
        except SystemExit as exit_:
            code = exit_.code
    return code, out.getvalue(), err.getvalue()


def _run(out: Path, *extra: str) -> tuple[int, str, str]:
    return _cli(pretrain, ["--output-dir", str(out), *REF_ARGS, *extra])


def _unfinished_copy(reference: dict, dest: Path, drop_checkpoint_4: bool = False) -> Path:
    """The reference folder as a run killed after its last checkpoint (or before it): no summary, no encoder."""
    shutil.copytree(reference["out"], dest)
    (dest / "summary.json").unlink()
    shutil.rmtree(dest / "encoder")
    if drop_checkpoint_4:
        shutil.rmtree(dest / "checkpoints" / "checkpoint-4")
    return dest


def _errors(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ": error: " in ln]


# ------------------------------------------------------------------------------------------ reference, second launch


@pytest.mark.slow
def test_second_launch_is_refused_and_the_first_run_unharmed(reference, monkeypatch, cache):
    code, _, err = reference["second"]
    (line,) = _errors(err)
    assert code == 1 and line.startswith(f"pretrain.py: error: {reference['out']} is in use by "
                                         f"another run (pid {reference['pid']} on host ")
    assert "use another --output-dir" in line
    out = reference["out"]
    log = [json.loads(ln) for ln in (out / "losses.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4]  # one line per step: nothing from the refused launch
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint-3", "checkpoint-4"]
    for ckpt in (out / "checkpoints").iterdir():
        verify_checkpoint(ckpt)
    assert _leftovers(out) == []  # the lock file is gone, no temporaries
    # the final summary names steps, loss, encoder and time
    summary = [ln for ln in reference["stdout"].splitlines() if ln.startswith("pretraining finished")]
    assert summary and f"4/4 steps, final loss {log[-1]['loss']:.4f}" in summary[0]
    assert f"encoder: {out / 'encoder'}" in summary[0] and " s; " in summary[0]


@pytest.mark.slow
def test_rerunning_a_finished_run_says_so(reference):
    out = reference["out"]
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    code, stdout, err = _run(out)
    assert code == 0 and "already finished at step 4 of 4; nothing to do" in stdout and not _errors(err)
    code, stdout, err = _run(out, "--max-steps", "2")
    assert code == 0 and "already finished at step 4 of 4" in stdout
    code, stdout, err = _run(out, "--max-steps", "10")
    assert code == 0 and "already finished at step 4 of 4" in stdout
    assert "--max-steps 10 is beyond the schedule's 4 steps (train.steps); the run stops at step 4" in err
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before  # nothing rewritten


@pytest.mark.slow
def test_changed_config_names_the_leaf_key_and_writes_nothing(reference):
    out = reference["out"]
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    code, _, err = _run(out, "data.0.root=/elsewhere")
    (line,) = _errors(err)
    assert code == 1 and "differs from the stored one in 1 key(s): data.0.root: None -> '/elsewhere'" in line
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before


# ------------------------------------------------------------------------------------------------------ SIGKILL


def _kill_plan(rng: random.Random, steps: int = 4, kills: int = 3) -> list[dict]:
    """Kill points in the order a chain of launches reaches them: each launch resumes from the last complete
    checkpoint, so the next kill must come at or after the step the previous one left the run at."""
    plan, done = [], 0  # done: the last complete checkpoint after the previous kill
    for _ in range(kills):
        options = []
        for s in range(done + 1, steps + 1):
            options += [{"kind": "file", "step": s, "file": f} for f in ("model.safetensors", "optimizer.bin",
                                                                         "random_states_0.pkl")]
            options += [{"kind": "manifest", "step": s}, {"kind": "rename", "step": s}, {"kind": "log", "step": s}]
            if s >= 3:  # with total_limit 1 (2 while live) the first pruning happens at checkpoint 3
                options.append({"kind": "prune", "step": s})
        if not options:
            break
        fault = rng.choice(options)
        plan.append(fault)
        done = fault["step"] if fault["kind"] in ("rename", "prune") else fault["step"] - 1
    plan.append(rng.choice([{"kind": "export"}, {"kind": "timer", "delay": round(rng.uniform(2.0, 12.0), 2)}]))
    return plan


@pytest.mark.slow
def test_sigkill_at_random_points_resumes_bit_identical(reference, cache, tmp_path):
    rng = random.Random(SEED)
    plan = _kill_plan(rng)
    out = tmp_path / "run"
    args = [*ARGS, "train.checkpoint_total_limit=1"]
    where = f"(LARGEAD_FAULT_SEED={SEED}, plan {plan})"
    after = None
    for fault in plan:
        res = _launch(out, args, cache, fault)
        if fault["kind"] != "timer":
            assert res.returncode == -signal.SIGKILL, f"{fault} did not fire {where}: {res.stderr[-2000:]}"
        if after is not None and fault["kind"] != "timer":  # what the launch after a kill reported
            assert "pretrain.py: error" not in res.stderr, f"{where}: {res.stderr[-2000:]}"
            assert "ended without releasing its lock" in res.stderr, where
            if after["kind"] == "log":
                assert "dropped a torn last line" in res.stderr, where
            if after["kind"] in ("file", "manifest"):
                assert f".tmp-checkpoint-{after['step']}" in res.stderr, where
            if after["kind"] == "prune":
                assert ".old-checkpoint-" in res.stderr, where
        after = fault
    res = _launch(out, args, cache)
    assert res.returncode == 0, f"{where}: {res.stderr[-3000:]}"
    assert _outcome(out) == reference["outcome"], f"not bit-identical {where}"
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint-4"], where  # total_limit 1 at end
    assert _leftovers(out) == [], where


# ----------------------------------------------------------------------------------------- damaged checkpoints


@pytest.mark.slow
@pytest.mark.parametrize("name,how", [("model.safetensors", "truncated"), ("optimizer.bin", "zeroed"),
                                      ("custom_state_0.json", "removed")])
def test_damaged_checkpoint_falls_back_in_one_line(reference, tmp_path, monkeypatch, cache, name, how):
    monkeypatch.setenv("LARGEAD_CACHE", str(cache))
    out = _unfinished_copy(reference, tmp_path / "run")
    path = out / "checkpoints" / "checkpoint-4" / name
    if how == "truncated":
        path.write_bytes(path.read_bytes()[:1000])
    elif how == "zeroed":
        path.write_bytes(bytes(path.stat().st_size))
    else:
        path.unlink()
    code, _, err = _run(out)
    assert code == 0, err[-2000:]
    (line,) = [ln for ln in err.splitlines() if "unusable" in ln]
    assert line.startswith(f"{out / 'checkpoints' / 'checkpoint-4'} is unusable: {name} ")
    assert line.endswith("; falling back to checkpoint-3")
    assert _outcome(out) == reference["outcome"]  # = resuming from checkpoint-3 by hand = uninterrupted


@pytest.mark.slow
def test_torn_losses_log_is_dropped_and_said(reference, tmp_path, monkeypatch, cache):
    monkeypatch.setenv("LARGEAD_CACHE", str(cache))
    out = _unfinished_copy(reference, tmp_path / "run", drop_checkpoint_4=True)
    text = (out / "losses.jsonl").read_bytes()
    last = text.rstrip(b"\n").rsplit(b"\n", 1)[1]
    (out / "losses.jsonl").write_bytes(text[: len(text) - len(last) // 2 - 1])  # killed mid-line of step 4
    code, _, err = _run(out)
    assert code == 0 and "losses.jsonl: dropped a torn last line" in err, err[-2000:]
    assert _outcome(out) == reference["outcome"]


@pytest.mark.slow
def test_poisoned_pickles_are_refused_and_never_run(reference, tmp_path, monkeypatch, cache):
    monkeypatch.setenv("LARGEAD_CACHE", str(cache))
    out = _unfinished_copy(reference, tmp_path / "run")
    marker = tmp_path / "marker"

    class Poison:
        def __reduce__(self):
            return (exec, (f"open({str(marker)!r}, 'w').write('pwned')",))

    four, three = out / "checkpoints" / "checkpoint-4", out / "checkpoints" / "checkpoint-3"
    torch.save(Poison(), four / "custom_checkpoint_0.pkl")  # what accelerate would unpickle with weights_only=False
    torch.save(Poison(), three / "optimizer.bin")
    write_manifest(four, 4)  # the attacker rewrote the manifests too
    write_manifest(three, 3)
    before = sorted(p.name for p in out.iterdir())
    code, _, err = _run(out)
    (line,) = _errors(err)
    assert code == 1 and "no checkpoint in" in line and "custom_checkpoint_0.pkl is accelerate's pickled custom " \
        "state" in line and "optimizer.bin cannot be loaded as plain tensor data, nothing in it was run" in line
    assert not marker.exists()
    assert sorted(p.name for p in out.iterdir()) == before


# ---------------------------------------------------------------------------------------------- full, read-only


@pytest.mark.slow
def test_full_disk_is_one_line_leaves_no_partial_folder_and_resumes(reference, tmp_path, monkeypatch, cache,
                                                                   full_disk_on_optimizer):

    monkeypatch.setenv("LARGEAD_CACHE", str(cache))
    out = _unfinished_copy(reference, tmp_path / "run", drop_checkpoint_4=True)
    real = full_disk_on_optimizer()  # the disk fills up half-way through optimizer.bin
    code, _, err = _run(out)
    (line,) = _errors(err)
    assert code == 1 and line.startswith(f"pretrain.py: error: no space left on "
                                         f"{out / 'checkpoints'} while writing checkpoint 4; the previous checkpoint "
                                         "checkpoint-3 is intact")
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint-3"]  # no partial folder
    verify_checkpoint(out / "checkpoints" / "checkpoint-3")
    assert _leftovers(out) == []
    monkeypatch.setattr(torch, "save", real)
    code, _, err = _run(out)  # space freed: the same command finishes the run
    assert code == 0, err[-2000:]
    assert _outcome(out) == reference["outcome"]


@pytest.mark.slow
def test_read_only_output_is_one_line_and_leaves_the_previous_checkpoint(reference, tmp_path, monkeypatch, cache,
                                                                         read_only_checkpoints):
    monkeypatch.setenv("LARGEAD_CACHE", str(cache))
    out = _unfinished_copy(reference, tmp_path / "run", drop_checkpoint_4=True)
    read_only_checkpoints(out)
    code, _, err = _run(out)
    (line,) = _errors(err)
    assert code == 1 and f"cannot write to {out / 'checkpoints'} (" in line
    assert line.split(") while writing checkpoint 4; the previous checkpoint checkpoint-3 is intact")[0].endswith(
        ("permission denied", "read-only file system"))
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint-3"]
    verify_checkpoint(out / "checkpoints" / "checkpoint-3")


# ----------------------------------------------------------------------------------------------- failed starts


BAD_DATA = "data=[{name: nuscenes, root: /nonexistent/nuscenes}]"


def test_failed_start_writes_nothing(tmp_path):
    fresh = tmp_path / "fresh"
    code, _, err = _cli(pretrain, ["--output-dir", str(fresh), *ARGS, BAD_DATA])
    (line,) = _errors(err)
    assert code == 1 and "/nonexistent/nuscenes" in line
    assert not fresh.exists()
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "notes.txt").write_text("mine")
    code, _, err = _cli(pretrain, ["--output-dir", str(kept), *ARGS, BAD_DATA])
    assert code == 1 and sorted(os.listdir(kept)) == ["notes.txt"]


@pytest.mark.slow
def test_failure_in_the_first_step_removes_what_loading_wrote(tmp_path, monkeypatch, cache):
    from largead.pretrain.model import PretrainModel

    monkeypatch.setenv("LARGEAD_CACHE", str(cache))

    def broken(self, batch, progress=None):  # fails after the first batch was loaded (its segments cached in output_dir)
        raise RuntimeError("out of memory in the first step")

    monkeypatch.setattr(PretrainModel, "forward", broken)
    out = tmp_path / "run"
    code, _, err = _cli(pretrain, ["--output-dir", str(out), *ARGS])
    (line,) = _errors(err)
    assert code == 1 and "out of memory in the first step" in line
    assert not out.exists()  # segment_cache/ and the lock went with it: the corrected rerun starts clean


def test_finetune_weights_error_writes_nothing(tmp_path):
    out = tmp_path / "ft"
    code, _, err = _cli(finetune, ["--config", "linear-probe-synthetic", "--output-dir", str(out), "--pretrained",
                                   str(tmp_path / "no-such-encoder"), "model.backbone=minkunet14",
                                   "data.options={num_sequences: 1, frames_per_sequence: 2, num_cameras: 0, beams: 4}"])
    (line,) = _errors(err)
    assert code == 1 and "no-such-encoder" in line
    assert not out.exists()
