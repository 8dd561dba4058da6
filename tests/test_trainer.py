"""Tests of largead.trainer: config parsing, run-config guard, optimiser/scheduler values, exact resume, NaN guard."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pytest
import torch

from largead import trainer as T


@dataclass
class _Inner:
    lr: float
    name: Literal["a", "b"] = "a"


@dataclass
class _Cfg:
    inner: _Inner
    steps: int = 3
    sizes: tuple[float, float, float] = (0.1, 1.0, 0.1)
    tags: list[str] = field(default_factory=list)


def _write(path, text):
    path.write_text(text)
    return path


def test_load_config_base_overrides_and_types(tmp_path):
    _write(tmp_path / "base.yaml", "inner: {lr: 0.5}\nsteps: 10\n")
    child = _write(tmp_path / "child.yaml", "base: base.yaml\ninner: {name: b}\nsizes: [1, 2, 3]\n")
    cfg = T.load_config(_Cfg, child, ["inner.lr=0.25", "tags=[x, y]", "sizes.1=5"])
    assert cfg == _Cfg(inner=_Inner(lr=0.25, name="b"), steps=10, sizes=(1.0, 5.0, 3.0), tags=["x", "y"])
    with pytest.raises(T.ConfigError, match="index 7 is out of range"):
        T.load_config(_Cfg, child, ["sizes.7=1"])
    assert T.config_to_dict(cfg)["sizes"] == [1.0, 5.0, 3.0]


@pytest.mark.parametrize("text,override,needle", [
    ("inner: {lr: 0.5}\nstep: 3\n", [], "'step'"),  # unknown key, named
    ("inner: {lr: 0.5, lrr: 1}\n", [], "'inner.lrr'"),  # unknown nested key, dotted
    ("inner: {name: a}\n", [], "missing required key 'inner.lr'"),
    ("inner: {lr: fast}\n", [], "'inner.lr' must be a number"),
    ("inner: {lr: 0.5}\n", ["inner.name=c"], "'inner.name' must be one of"),
    ("inner: {lr: 0.5}\nsizes: [1, 2]\n", [], "'sizes' must be a list of 3 items"),
    ("inner: {lr: 0.5}\nsteps: 2.5\n", [], "'steps' must be an integer"),
])
def test_load_config_errors_name_key_and_file(tmp_path, text, override, needle):
    path = _write(tmp_path / "bad.yaml", text)
    with pytest.raises(T.ConfigError) as err:
        T.load_config(_Cfg, path, override)
    assert needle in str(err.value) and str(path) in str(err.value)


def test_bad_override_syntax():
    with pytest.raises(T.ConfigError, match="key=value"):
        T.parse_overrides(["optim.lr"])


@pytest.mark.parametrize("value", [1e-05, 0.2, 3, True, None, "a b", [48, 80], {"seed": 0, "lr": 2.5e-4,
                                                                             "size": [8, 8], "name": "x"}])
def test_format_override_reads_back(value):
    text = T.format_override(value)
    assert "\n" not in text
    assert T.parse_overrides([f"k={text}"]) == {"k": value}


def test_resolve_config_path(tmp_path):
    folder = tmp_path / "training" / "configs"
    folder.mkdir(parents=True)
    for stem in ("finetune-a", "linear-probe-b", "other", "_base"):
        (folder / f"{stem}.yaml").write_text("x: 1\n")
    elsewhere = _write(tmp_path / "mine.yaml", "x: 2\n")
    assert T.resolve_config_path(str(elsewhere), folder) == elsewhere
    assert T.resolve_config_path("other", folder) == folder / "other.yaml"
    assert T.resolve_config_path("other.yaml", folder) == folder / "other.yaml"
    with pytest.raises(FileNotFoundError, match=r"neither a file nor one of training/configs: finetune-a, "
                                                r"linear-probe-b, other$"):
        T.resolve_config_path("nope", folder)
    with pytest.raises(FileNotFoundError, match=r"training/configs: finetune-a, linear-probe-b$"):
        T.resolve_config_path("nope", folder, prefixes=("finetune-", "linear-probe-"))


def test_run_config_guard(tmp_path):
    T.check_run_config(tmp_path, {"a": {"b": 1, "c": 2}, "d": 3})
    T.check_run_config(tmp_path, {"a": {"b": 1, "c": 2}, "d": 3})  # identical: fine
    with pytest.raises(T.ConfigMismatchError) as err:
        T.check_run_config(tmp_path, {"a": {"b": 5, "c": 2}, "e": 3})
    msg = str(err.value)
    assert "3 key(s)" in msg and "a.b: 1 -> 5" in msg and "'d'" not in msg.split(":")[0]
    assert T.config_diff({"a": {"b": 1, "c": 2}, "d": 3}, {"a": {"b": 5, "c": 2}, "e": 3}) == ["a.b", "d", "e"]
    T.check_run_config(tmp_path, {"a": {"b": 5}}, force=True)
    T.check_run_config(tmp_path, {"a": {"b": 5}})  # the forced config was stored


def test_sgd_scaling_and_cosine_values():
    p = torch.nn.Parameter(torch.zeros(2))
    opt = T.build_optimizer([p], T.SLIDR_SGD, global_batch_size=8)
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


def test_atomic_directory_keeps_old_on_error(tmp_path):
    final = tmp_path / "export"
    with T.atomic_directory(final) as d:
        (d / "a.txt").write_text("1")
    with pytest.raises(RuntimeError), T.atomic_directory(final) as d:
        (d / "a.txt").write_text("2")
        raise RuntimeError("boom")
    assert (final / "a.txt").read_text() == "1" and sorted(p.name for p in tmp_path.iterdir()) == ["export"]


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
