"""Tests of largead.trainer: optimiser/scheduler values, data order, exact resume, NaN guard, and the fault matrix on a
toy loop (every checkpoint file truncated / zeroed / removed, poisoned pickles, full and read-only disk, the run
folder's lock and rollback). The same faults on the tiny pretraining config: tests/training/test_faults.py; configs:
test_config.py."""

from __future__ import annotations

import json
import math
import os
import shutil

import numpy as np
import pytest
import torch

from largead import trainer as T


def test_lr_is_the_recipe_s_unless_asked_to_scale():
    from dataclasses import replace

    assert T.scaled_lr(T.SLIDR_SGD, 32) == 0.5  # 8 GPUs x 4: SLidR's 0.5, not 4.0
    assert T.scaled_lr(replace(T.SLIDR_SGD, scale_lr="linear"), 32) == 4.0
    assert T.scaled_lr(replace(T.SLIDR_SGD, scale_lr=True), 8) == 1.0  # true means linear
    assert T.scaled_lr(replace(T.SLIDR_SGD, scale_lr="sqrt"), 16) == pytest.approx(1.0)
    assert T.scaled_lr(replace(T.SLIDR_SGD, scale_lr="linear", max_lr=2.0), 32) == 2.0
    assert T.lr_note(T.SLIDR_SGD, 4) is None
    assert "global batch 32 differs from the recipe's 4: lr 0.5" in T.lr_note(T.SLIDR_SGD, 32)
    assert T.scaled_lr(T.SUPERFLOW_ADAMW, 32) == 0.01


def test_sgd_scaling_and_cosine_values():
    from dataclasses import replace

    p = torch.nn.Parameter(torch.zeros(2))
    opt = T.build_optimizer([p], replace(T.SLIDR_SGD, scale_lr="linear"), global_batch_size=8)
    g = opt.param_groups[0]
    assert (g["lr"], g["momentum"], g["dampening"], g["weight_decay"]) == (1.0, 0.9, 0.1, 1e-4)
    sched = T.build_scheduler(opt, T.SLIDR_SGD, total_steps=4)
    lrs = []
    for _ in range(5):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    expected = [0.5 * (1 + math.cos(math.pi * s / 4)) for s in range(5)]  # 1, .854, .5, .146, 0
    assert np.allclose(lrs, expected)
    heads = T.build_optimizer([{"params": [p], "lr_scale": 100.0}], T.SLIDR_SGD, global_batch_size=4)
    assert heads.param_groups[0]["lr"] == pytest.approx(50.0)


def test_adamw_onecycle_peaks_at_pct_start():
    p = torch.nn.Parameter(torch.zeros(2))
    opt = T.build_optimizer([p], T.SUPERFLOW_ADAMW, global_batch_size=4)
    assert isinstance(opt, torch.optim.AdamW) and opt.param_groups[0]["weight_decay"] == 0.01
    sched = T.build_scheduler(opt, T.SUPERFLOW_ADAMW, total_steps=10)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert int(np.argmax(lrs)) == 1 and max(lrs) == pytest.approx(0.01, rel=1e-6) and lrs[0] < 0.001


def test_resume_position():
    assert T.resume_position(0, 3, 1) == (0, 0)
    assert T.resume_position(4, 3, 2) == (2, 2)  # 8 micro-batches = 2 epochs of 3 + 2


# ---------------------------------------------------------------------------------------------- toy training loop


class _Noisy(torch.utils.data.Dataset):
    """5 samples; each gets (seed, epoch, index)-dependent noise, so the sample order and epoch matter."""

    def __init__(self):
        self.epoch = 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return 5

    def __getitem__(self, i):
        x = torch.full((3,), float(i)) + torch.from_numpy(T.sample_rng(7, self.epoch, i).normal(size=3)).float()
        return x, torch.tensor([float(i) * 0.5])


def _reset_accelerate():
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()


def _train(out, stop_at, total=7, grad_accum=2, resume="latest", lr=0.05):
    _reset_accelerate()
    acc = T.make_accelerator(out, grad_accum=grad_accum, log_with=None, seed=3)
    model = torch.nn.Linear(3, 1)
    ocfg = T.OptimizerConfig(name="sgd", lr=lr, base_batch_size=2)
    opt = T.build_optimizer(model.parameters(), ocfg, 2)
    dl = T.make_dataloader(_Noisy(), batch_size=2, seed=3)
    model, opt, dl = acc.prepare(model, opt, dl)
    sched = T.build_scheduler(opt, ocfg, total)
    acc.register_for_checkpointing(sched)
    step = T.resume(acc, out, resume)
    epoch, skip = T.resume_position(step, len(dl), grad_accum)
    losses, seen = [], []
    while step < stop_at:
        for x, y in T.epoch_batches(acc, dl, epoch, skip):
            with acc.accumulate(model):
                loss = torch.nn.functional.mse_loss(model(x), y)
                T.check_finite_loss(acc, loss, step, out)
                acc.backward(loss)
                opt.step()
                opt.zero_grad()
            losses.append(round(loss.item(), 6))
            seen.append(y.flatten().tolist())
            if acc.sync_gradients:
                sched.step()
                step += 1
                T.save_checkpoint(acc, out, step, total_limit=2)
                if step >= stop_at:
                    break
        epoch, skip = epoch + 1, 0
    T.finish(acc)
    return losses, seen, model


def test_exact_resume_and_checkpoint_limit(tmp_path):
    full, seen_full, m_full = _train(tmp_path / "a", 7)
    first, seen_first, _ = _train(tmp_path / "b", 3)
    second, seen_second, m_res = _train(tmp_path / "b", 7)
    assert first + second == full and seen_first + seen_second == seen_full
    assert torch.equal(m_full.weight, m_res.weight)
    assert [s for s, _ in T.list_checkpoints(tmp_path / "b")] == [6, 7]
    # every epoch is a permutation (2 full batches of 2 out of 5, drop_last) and epochs differ
    assert len(seen_full) == 14 and seen_full[:2] != seen_full[2:4]


def test_finish_allows_a_new_run_with_other_settings(tmp_path):
    _train(tmp_path / "a", 1)  # ends with finish()
    acc = T.make_accelerator(tmp_path / "b", mixed_precision="bf16", grad_accum=3, log_with=None)
    assert acc.mixed_precision == "bf16" and acc.gradient_accumulation_steps == 3
    T.finish(acc)


def test_resume_missing_checkpoint_is_clear(tmp_path):
    _reset_accelerate()
    acc = T.make_accelerator(tmp_path, log_with=None)
    assert T.resume(acc, tmp_path, "latest") == 0
    with pytest.raises(FileNotFoundError, match="checkpoint-<step>"):
        T.resume(acc, tmp_path, "checkpoint-9")


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    _train(tmp_path, 2)
    _reset_accelerate()
    acc = T.make_accelerator(tmp_path, log_with=None)
    with pytest.raises(T.NonFiniteLossError, match=r"step 2.*checkpoint-2"):
        T.check_finite_loss(acc, torch.tensor(float("nan")), 2, tmp_path)
    model = acc.prepare(torch.nn.Linear(2, 1))
    with torch.no_grad():
        model.weight[0, 0] = float("inf")
    with pytest.raises(T.NonFiniteLossError, match="weight"):
        T.save_checkpoint(acc, tmp_path, 3)
    assert [s for s, _ in T.list_checkpoints(tmp_path)] == [1, 2]


# ------------------------------------------------------------------------------- faults: damaged checkpoints, disk


class _Poison:
    """Unpickling this object writes a marker file (what a malicious checkpoint would do, harmlessly)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


def _state(out, step):
    """SHA-256 of every file of checkpoint-{step} but the RNG states: the model, optimiser and scheduler."""
    files = json.loads((out / "checkpoints" / f"checkpoint-{step}" / "manifest.json").read_text())["files"]
    return {k: v["sha256"] for k, v in files.items() if not k.startswith("random_states")}


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """An uninterrupted 7-step toy run and a run stopped at step 5 (checkpoints 4 and 5)."""
    base = tmp_path_factory.mktemp("toy")
    _, _, m_full = _train(base / "full", 7)
    _train(base / "part", 5)
    return base / "full", base / "part", m_full


def _fallback_lines(err):
    return [ln for ln in err.splitlines() if " is unusable: " in ln]


@pytest.mark.parametrize("name", ["model.safetensors", "optimizer.bin", "random_states_0.pkl", "custom_state_0.json",
                                  "manifest.json"])
@pytest.mark.parametrize("how", ["truncated", "zeroed", "removed"])
def test_damaged_latest_checkpoint_falls_back_bit_identically(toy, tmp_path, capsys, name, how, damage):
    full, part, m_full = toy
    run, hand = tmp_path / "run", tmp_path / "hand"
    shutil.copytree(part, run)
    shutil.copytree(part, hand)
    damage(run / "checkpoints" / "checkpoint-5" / name, how)
    capsys.readouterr()
    losses, seen, model = _train(run, 7)
    (line,) = _fallback_lines(capsys.readouterr().err)
    assert line.startswith(f"{run / 'checkpoints' / 'checkpoint-5'} is unusable: ")
    assert line.endswith("; falling back to checkpoint-4")
    assert f"is unusable: {name} " in line or f"is unusable: it has no {name} " in line  # names the bad file
    # the same as resuming from checkpoint-4 by hand, and as the uninterrupted run
    losses_h, seen_h, model_h = _train(hand, 7, resume="checkpoint-4")
    assert losses == losses_h and seen == seen_h and torch.equal(model.weight, model_h.weight)
    assert torch.equal(model.weight, m_full.weight) and torch.equal(model.bias, m_full.bias)
    assert _state(run, 7) == _state(hand, 7) == _state(full, 7)


def test_empty_or_unfinished_checkpoint_folder_is_skipped(toy, tmp_path, capsys):
    full, part, _ = toy
    run = tmp_path / "run"
    shutil.copytree(part, run)
    (run / "checkpoints" / "checkpoint-6").mkdir()  # e.g. made by hand or by another tool
    capsys.readouterr()
    _train(run, 7)
    (line,) = _fallback_lines(capsys.readouterr().err)
    assert "checkpoint-6 is unusable: the folder is empty; falling back to checkpoint-5" in line
    assert _state(run, 7) == _state(full, 7)


def test_no_verifiable_checkpoint_and_explicit_damaged_one_are_errors(toy, tmp_path, capsys, damage):
    _, part, _ = toy
    run = tmp_path / "run"
    shutil.copytree(part, run)
    damage(run / "checkpoints" / "checkpoint-5" / "model.safetensors", "zeroed")
    with pytest.raises(T.CheckpointError, match=r"cannot resume from .*checkpoint-5: model.safetensors does not "
                                                r"match its checksum"):
        _train(run, 7, resume="checkpoint-5")  # asked for by name: no fallback
    damage(run / "checkpoints" / "checkpoint-4" / "optimizer.bin", "truncated")
    with pytest.raises(T.CheckpointError, match=r"no checkpoint in .* can be resumed from: checkpoint-5 \(model"
                                                r".*checkpoint-4 \(optimizer.bin has \d+ bytes"):
        _train(run, 7)
    assert len(_fallback_lines(capsys.readouterr().err)) == 2


@pytest.mark.parametrize("name", ["optimizer.bin", "random_states_0.pkl", "custom_checkpoint_0.pkl"])
def test_poisoned_pickle_in_checkpoint_is_refused_and_never_run(toy, tmp_path, capsys, name):
    full, part, _ = toy
    run, marker = tmp_path / "run", tmp_path / "marker"
    shutil.copytree(part, run)
    ckpt = run / "checkpoints" / "checkpoint-5"
    torch.save(_Poison(marker), ckpt / name)
    from largead.runfolder import write_manifest

    write_manifest(ckpt, 5)  # the attacker rewrote the manifest too
    capsys.readouterr()
    _train(run, 7)
    (line,) = _fallback_lines(capsys.readouterr().err)
    assert f"checkpoint-5 is unusable: {name} " in line and ("nothing in it was run" in line or "refused" in line)
    assert not marker.exists()
    assert _state(run, 7) == _state(full, 7)


def test_missing_rng_state_is_reported(toy, tmp_path, capsys):
    _, part, _ = toy
    run = tmp_path / "run"
    shutil.copytree(part, run)
    ckpt = run / "checkpoints" / "checkpoint-5"
    (ckpt / "random_states_0.pkl").unlink()
    from largead.runfolder import write_manifest

    write_manifest(ckpt, 5)  # consistent, but without this process's RNG state (as if saved by other processes)
    capsys.readouterr()
    _train(run, 6)
    assert "checkpoint-5 has no RNG state for process 0 (saved by 1 process(es))" in capsys.readouterr().err


def _checkpoint_names(run):
    return sorted(p.name for p in (run / "checkpoints").iterdir())


def test_full_disk_mid_write_leaves_the_previous_checkpoint_and_resumes(toy, tmp_path, monkeypatch,
                                                                        full_disk_on_optimizer):
    full, _, m_full = toy
    run = tmp_path / "run"
    _train(run, 2)
    full_disk_on_optimizer()  # the writer fills the disk half-way through optimizer.bin
    with pytest.raises(T.CheckpointWriteError) as info:
        _train(run, 4)
    assert str(info.value) == (f"no space left on {run / 'checkpoints'} while writing checkpoint 3; the previous "
                               "checkpoint checkpoint-2 is intact")
    assert _checkpoint_names(run) == ["checkpoint-1", "checkpoint-2"]  # no partial folder left
    T.verify_checkpoint(run / "checkpoints" / "checkpoint-2")
    monkeypatch.undo()
    _, _, model = _train(run, 7)
    assert torch.equal(model.weight, m_full.weight) and _state(run, 7) == _state(full, 7)


def test_too_little_free_space_is_refused_before_writing(tmp_path, monkeypatch):
    run = tmp_path / "run"
    _train(run, 2)
    ckpt = run / "checkpoints" / "checkpoint-2"
    size = sum(p.stat().st_size for p in ckpt.iterdir() if p.name != "manifest.json")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9 - 100, 100))
    expected = (rf"^no space left on {run / 'checkpoints'} for checkpoint 3: the previous one took "
                rf"{size / 1000:.1f} kB, 100 bytes are free; the previous checkpoint checkpoint-2 is intact$")
    with pytest.raises(T.CheckpointWriteError, match=expected):
        _train(run, 3)
    assert _checkpoint_names(run) == ["checkpoint-1", "checkpoint-2"]


def test_read_only_output_is_one_line_and_leaves_the_previous_checkpoint(tmp_path, read_only_checkpoints):
    run = tmp_path / "run"
    _train(run, 2)
    read_only_checkpoints(run)
    with pytest.raises(T.CheckpointWriteError, match=rf"^cannot write to {run / 'checkpoints'} \((permission "
                                                     r"denied|read-only file system)\) while writing checkpoint 3; "
                                                     "the previous checkpoint checkpoint-2 is intact$"):
        _train(run, 3)
    assert _checkpoint_names(run) == ["checkpoint-1", "checkpoint-2"]


# ----------------------------------------------------------------------------------------------------- run folder


def test_run_folder_failed_start_leaves_nothing_and_commit_keeps(tmp_path, capsys):
    _reset_accelerate()
    acc = T.make_accelerator(tmp_path / "new", log_with=None)
    assert not (tmp_path / "new").exists()  # building the accelerator writes nothing
    with pytest.raises(ValueError, match="bad root"), T.RunFolder(acc, tmp_path / "new"):
        assert (tmp_path / "new" / ".largead.lock").is_file()
        (tmp_path / "new" / "segment_cache" / "x").mkdir(parents=True)
        raise ValueError("bad root")
    assert not (tmp_path / "new").exists()

    old = tmp_path / "old"
    old.mkdir()
    (old / "notes.txt").write_text("mine")
    acc = T.make_accelerator(old, log_with=None)
    with pytest.raises(ValueError), T.RunFolder(acc, old):
        (old / "run_config.json").write_text("{}")
        raise ValueError("weights error")
    assert sorted(os.listdir(old)) == ["notes.txt"]
    assert "removed what this run wrote before its first step (run_config.json)" in capsys.readouterr().err

    acc = T.make_accelerator(old, log_with=None)
    with pytest.raises(T.NonFiniteLossError), T.RunFolder(acc, old) as run:
        (old / "losses.jsonl").write_text("")
        run.commit()
        raise T.NonFiniteLossError("later")
    assert sorted(os.listdir(old)) == ["losses.jsonl", "notes.txt"]  # a committed run keeps its outputs


def test_run_folder_refuses_a_second_run_and_reports_a_dead_one(tmp_path, capsys):
    _reset_accelerate()
    acc = T.make_accelerator(tmp_path, log_with=None)
    with T.RunFolder(acc, tmp_path):
        with pytest.raises(T.RunLockedError, match=rf"{tmp_path} is in use by another run \(pid {os.getpid()} "):
            with T.RunFolder(T.make_accelerator(tmp_path, log_with=None), tmp_path):
                pass
        assert (tmp_path / ".largead.lock").is_file()  # the refused run did not touch the holder's lock
    assert not (tmp_path / ".largead.lock").exists()
    # a holder killed mid-run leaves its lock file (the OS released the lock) and temporaries behind
    (tmp_path / ".largead.lock").write_text(json.dumps({"pid": 4242, "host": "node7", "started": 0}))
    (tmp_path / "checkpoints" / ".tmp-checkpoint-3").mkdir(parents=True)
    (tmp_path / "checkpoints" / ".tmp-checkpoint-3" / "model.safetensors").write_bytes(b"x" * 2000)
    capsys.readouterr()
    with T.RunFolder(T.make_accelerator(tmp_path, log_with=None), tmp_path):
        pass
    err = capsys.readouterr().err
    assert "the previous run (pid 4242 on host node7, started 1970-01-01" in err and "ended without releasing" in err
    assert "removed 1 temporary file(s) of an interrupted run" in err and "checkpoints/.tmp-checkpoint-3" in err
    assert not (tmp_path / "checkpoints" / ".tmp-checkpoint-3").exists()


def test_live_limit_and_finalize(tmp_path):
    assert [T.live_limit(n) for n in (None, 0, 1, 2, 5)] == [None, 2, 2, 2, 5]
    _train(tmp_path, 4)  # total_limit=2 in _train
    _reset_accelerate()
    acc = T.make_accelerator(tmp_path, log_with=None)
    T.finalize_checkpoints(acc, tmp_path, None)
    assert [s for s, _ in T.list_checkpoints(tmp_path)] == [3, 4]
    T.finalize_checkpoints(acc, tmp_path, 0, finished=False)  # stopped early: the final one stays to continue
    assert [s for s, _ in T.list_checkpoints(tmp_path)] == [4]
    T.finalize_checkpoints(acc, tmp_path, 0, finished=True)  # done and exported: none kept
    assert T.list_checkpoints(tmp_path) == []
    T.finish(acc)


def test_divergence_rule():
    assert T.divergence([4954.0, 1.07e6, 2.2e6, 3.16e6, 2.75e6]) is not None  # the linear probe
    assert "from 4954 at step 1 to 2.75e+06" in T.divergence([4954.0, 2.75e6])
    assert T.divergence([2.5, 2.0, 1.5, 1.2, 1.1]) is None
    assert T.divergence([2.5, 30.0, 2.0]) is None  # a spike that settles is not divergence
    assert T.divergence([2.5, 26.0]) is not None and T.divergence([2.5, 26.0], factor=None) is None
    assert T.divergence([2.5]) is None and T.divergence([2.5, float("inf")]) is not None
