"""Tests of largead.trainer: optimiser/scheduler values, data order, exact resume, NaN guard (configs: test_config.py)."""

from __future__ import annotations

import math

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
