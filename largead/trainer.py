"""The accelerate training loop's parts, shared by pretraining and fine-tuning (:mod:`largead.training`).

Everything a diffusers-style training script needs beyond the model, the loss and its configuration (which is
:mod:`largead.config`):

Accelerator and checkpoints
    :func:`make_accelerator` builds an :class:`accelerate.Accelerator` with a :class:`ProjectConfiguration` rooted at
    ``output_dir`` (logs under ``output_dir/logs``), a seeded data-loader configuration and per-process seeding.
    :func:`save_checkpoint` writes ``output_dir/checkpoints/checkpoint-{step}`` atomically (every process writes into
    a temporary folder, the main process renames it) and keeps at most ``total_limit`` of them; it refuses to save a
    model with non-finite weights. :func:`resume` loads ``"latest"`` or a given folder and returns the optimiser step
    to continue from. (:func:`largead.config.check_run_config` refuses a resumed run whose config differs.)

Data order
    :func:`make_dataloader` + ``accelerator.prepare`` give each process a disjoint shard of a permutation that
    depends only on ``(seed, epoch)``; :func:`resume_position` + :func:`epoch_batches` continue a resumed run at the
    exact next micro-batch (``accelerator.skip_first_batches``). :func:`sample_rng` gives a per-sample random
    generator from ``(seed, epoch, index)`` so augmentations do not depend on the process or worker layout.

Optimisation
    :func:`build_optimizer` (SGD as in SLidR, AdamW as in SuperFlow; learning rate scaled linearly with the global
    batch), :func:`build_scheduler` (cosine, one-cycle, constant), :func:`check_finite_loss` (stops every process with
    :class:`NonFiniteLossError`), :func:`progress_bar` (tqdm on the local main process only), :func:`finish` (end
    trackers, reset accelerate's process-wide state so another run can start in the same process). Final exports go
    through :func:`largead.fileio.atomic_directory`.

Typical loop (see :mod:`largead.training.pretrain`)::

    acc = make_accelerator(out, mixed_precision="no", grad_accum=2, seed=0)
    model, opt, dl = acc.prepare(model, build_optimizer(model.parameters(), ocfg, global_batch), dl)
    sched = build_scheduler(opt, ocfg, total_steps)          # stepped by hand, once per optimiser step
    acc.register_for_checkpointing(sched)
    step = resume(acc, out, "latest")
    epoch, skip = resume_position(step, len(dl), acc.gradient_accumulation_steps)
    while step < max_steps:
        for batch in epoch_batches(acc, dl, epoch, skip):
            with acc.accumulate(model):
                loss = ...; check_finite_loss(acc, loss, step); acc.backward(loss); opt.step(); opt.zero_grad()
            if acc.sync_gradients:
                sched.step(); step += 1
                if step % every == 0: save_checkpoint(acc, out, step, total_limit)
        epoch, skip = epoch + 1, 0
    finish(acc)
"""

from __future__ import annotations

import math
import os
import random
import re
import shutil
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch

if TYPE_CHECKING:
    from accelerate import Accelerator

CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_PREFIX = "checkpoint-"


class NonFiniteLossError(FloatingPointError):
    """The loss (or the model's weights) became NaN or infinite; training stops without saving that state."""


# ----------------------------------------------------------------------------------------------------------- config


@dataclass
class OptimizerConfig:
    """Optimiser + schedule. ``lr`` is the peak learning rate for a *global* batch of ``base_batch_size`` samples
    (all processes and accumulation steps together), the way SLidR and SuperFlow state their recipes.

    ``scale_lr`` says what happens when the run's global batch differs: ``"none"`` (default) keeps ``lr`` (the
    recipe's number, whatever the number of GPUs; a run whose global batch differs says so when it starts),
    ``"linear"`` multiplies it by ``global / base_batch_size`` (Goyal et al.), ``"sqrt"`` by its square root;
    ``max_lr`` caps the result. ``true`` / ``false`` are read as ``"linear"`` / ``"none"``. The effective lr and the
    global batch are written into the run's card."""

    name: Literal["sgd", "adamw"] = "sgd"
    lr: float = 0.5
    base_batch_size: int = 4
    scale_lr: Literal["none", "linear", "sqrt"] | bool = "none"
    max_lr: float | None = None
    momentum: float = 0.9
    dampening: float = 0.1
    weight_decay: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    scheduler: Literal["cosine", "onecycle", "constant"] = "cosine"
    warmup_steps: int = 0
    pct_start: float = 0.2  # one-cycle warm-up fraction (SuperFlow)
    min_lr_ratio: float = 0.0  # cosine floor as a fraction of the peak


SLIDR_SGD = OptimizerConfig(name="sgd", lr=0.5, base_batch_size=4, momentum=0.9, dampening=0.1, weight_decay=1e-4,
                            scheduler="cosine")
"""SLidR's pretraining optimiser (``config/slidr_minkunet.yaml``: SGD 0.5 for a global batch of 4 on 1 GPU,
momentum 0.9, dampening 0.1, wd 1e-4, cosine)."""

SUPERFLOW_ADAMW = OptimizerConfig(name="adamw", lr=0.01, base_batch_size=32, weight_decay=0.01, scheduler="onecycle",
                                  pct_start=0.2)
"""SuperFlow's optimiser (``configs/_base_/schedules/pretrain.py``: AdamW 0.01, wd 0.01, one-cycle with 20% warm-up)
for its global batch of 32 (4 per GPU x 8 GPUs, ``auto_scale_lr`` off)."""


# --------------------------------------------------------------------------------------------- accelerator, seeding


def seed_everything(seed: int, process_index: int = 0) -> int:
    """Seed python, numpy and torch with ``seed + process_index``; returns the seed used."""
    s = int(seed) + int(process_index)
    random.seed(s)
    np.random.seed(s % (2**32))
    torch.manual_seed(s)
    return s


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """Per-sample generator depending only on ``(seed, epoch, index)``: the same sample gets the same augmentation
    whatever the number of processes, workers or a resume in between."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, int(epoch), int(index)])


def make_accelerator(output_dir: str | os.PathLike, mixed_precision: str = "no", grad_accum: int = 1,
                     log_with: str | None = "tensorboard", seed: int = 0, total_limit: int | None = None,
                     cpu: bool = False) -> Accelerator:
    """An :class:`accelerate.Accelerator` for a run in ``output_dir``.

    - ``ProjectConfiguration(project_dir=output_dir, logging_dir=output_dir/logs, total_limit=...)``; checkpoint
      folders are named ``checkpoint-{step}`` by :func:`save_checkpoint` (accelerate's automatic naming counts saves,
      not steps, so it is not used).
    - Data loaders prepared by it use accelerate's seedable sampler with ``data_seed=seed`` (same permutation on
      every process, disjoint shards).
    - The scheduler is *not* stepped by accelerate with the optimiser: the loop steps it once per optimiser step,
      so its schedule is independent of the number of processes.
    - Every process is seeded with ``seed + process_index`` (model replicas are synchronised from process 0 by DDP).
    - ``log_with=None`` disables trackers; ``"tensorboard"`` writes under ``output_dir/logs``.
    - Several processes on a machine without CUDA (``WORLD_SIZE > 1``) run on CPU with the gloo backend. Launch them
      with ``accelerate launch --multi_gpu --num_processes N`` (or ``torchrun``): accelerate's ``--cpu`` flag starts a
      single process unless an mpirun hostfile is configured.
    """
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration

    if mixed_precision not in ("no", "fp16", "bf16"):
        raise ValueError(f"mixed_precision must be 'no', 'fp16' or 'bf16', got {mixed_precision!r}")
    if grad_accum < 1:
        raise ValueError(f"grad_accum must be >= 1, got {grad_accum}")
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    cpu = cpu or (int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available())
    project = ProjectConfiguration(project_dir=str(out), logging_dir=str(out / "logs"), total_limit=total_limit)
    acc = Accelerator(
        mixed_precision=mixed_precision,
        gradient_accumulation_steps=grad_accum,
        log_with=log_with,
        project_config=project,
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=int(seed)),
        step_scheduler_with_optimizer=False,
        cpu=cpu,
    )
    seed_everything(seed, acc.process_index)
    return acc


# ------------------------------------------------------------------------------------------------------ checkpoints


def list_checkpoints(output_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """``(step, folder)`` of every complete ``checkpoint-{step}`` under ``output_dir/checkpoints``, oldest first."""
    root = Path(output_dir) / CHECKPOINT_DIR
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = re.fullmatch(rf"{CHECKPOINT_PREFIX}(\d+)", p.name)
        if m and p.is_dir():
            found.append((int(m.group(1)), p))
    return sorted(found)


def _params_finite(models: Sequence[torch.nn.Module]) -> list[str]:
    bad = []
    for m in models:
        for name, t in list(m.named_parameters()) + list(m.named_buffers()):
            if t.is_floating_point() and not torch.isfinite(t).all():
                bad.append(name)
    return bad


def save_checkpoint(accelerator: Accelerator, output_dir: str | os.PathLike, step: int,
                    total_limit: int | None = None) -> Path:
    """Save the full training state (models, optimisers, schedulers, RNGs, registered objects) as
    ``output_dir/checkpoints/checkpoint-{step}``, atomically; keep the newest ``total_limit`` checkpoints.

    Every process must call it. Raises :class:`NonFiniteLossError` (saving nothing) if any weight is NaN/inf.
    """
    bad = _params_finite(accelerator._models)
    flag = torch.tensor([float(len(bad))], device=accelerator.device)
    if float(accelerator.reduce(flag, reduction="sum").item()) > 0:
        raise NonFiniteLossError(f"refusing to save checkpoint-{step}: non-finite weights in {bad[:5] or 'another process'}")
    root = Path(output_dir) / CHECKPOINT_DIR
    final = root / f"{CHECKPOINT_PREFIX}{step}"
    tmp = root / f".tmp-{CHECKPOINT_PREFIX}{step}"
    if accelerator.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        limit = total_limit if total_limit is not None else accelerator.project_configuration.total_limit
        if limit is not None and limit > 0:
            for _, old in list_checkpoints(output_dir)[:-limit]:
                shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return final


def resume(accelerator: Accelerator, output_dir: str | os.PathLike,
           resume_from_checkpoint: str | None = "latest") -> int:
    """Load a checkpoint into the prepared objects and return the optimiser step to continue from.

    ``resume_from_checkpoint``: ``None`` -> 0 (fresh run); ``"latest"`` -> newest ``checkpoint-{step}`` under
    ``output_dir/checkpoints`` or 0 if there is none; otherwise a checkpoint folder (absolute, or a name under
    ``output_dir/checkpoints``), which must exist.
    """
    if resume_from_checkpoint is None:
        return 0
    if resume_from_checkpoint == "latest":
        ckpts = list_checkpoints(output_dir)
        if not ckpts:
            return 0
        step, path = ckpts[-1]
    else:
        path = Path(resume_from_checkpoint)
        if not path.is_dir():
            path = Path(output_dir) / CHECKPOINT_DIR / resume_from_checkpoint
        m = re.fullmatch(rf"{CHECKPOINT_PREFIX}(\d+)", path.name)
        if not path.is_dir() or m is None:
            raise FileNotFoundError(f"checkpoint {resume_from_checkpoint!r} not found (expected a folder named "
                                    f"{CHECKPOINT_PREFIX}<step>, looked in {path})")
        step = int(m.group(1))
    accelerator.load_state(str(path))
    return step


# --------------------------------------------------------------------------------------------------------- data order


def make_dataloader(dataset: torch.utils.data.Dataset, batch_size: int, collate_fn: Callable | None = None,
                    seed: int = 0, shuffle: bool = True, num_workers: int = 0, drop_last: bool = True,
                    sampler: torch.utils.data.Sampler | None = None) -> torch.utils.data.DataLoader:
    """A DataLoader whose order depends only on ``seed`` (and the epoch, once prepared by an accelerator from
    :func:`make_accelerator`, which shards it so processes see disjoint samples). ``batch_size`` is per process.
    A custom ``sampler`` (e.g. :class:`largead.pretrain.multisource.MultiSourceSampler`) must itself be
    deterministic in its seed and ``set_epoch``."""
    if sampler is None and shuffle:
        sampler = torch.utils.data.RandomSampler(dataset, generator=torch.Generator().manual_seed(int(seed)))
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, sampler=sampler, collate_fn=collate_fn,
                                       num_workers=num_workers, drop_last=drop_last)


def resume_position(step: int, batches_per_epoch: int, grad_accum: int = 1) -> tuple[int, int]:
    """``(epoch, micro-batches to skip in that epoch)`` after ``step`` optimiser steps of ``grad_accum`` micro-batches
    each, with ``batches_per_epoch`` micro-batches per epoch on each process."""
    if batches_per_epoch <= 0:
        raise ValueError("the data loader yields no batch (dataset smaller than the global batch with drop_last?)")
    consumed = int(step) * int(grad_accum)
    return consumed // batches_per_epoch, consumed % batches_per_epoch


def epoch_batches(accelerator: Accelerator, dataloader: torch.utils.data.DataLoader, epoch: int,
                  skip: int = 0) -> Iterable:
    """The prepared ``dataloader`` for ``epoch`` (its seeded permutation), skipping the first ``skip`` micro-batches
    with ``accelerator.skip_first_batches``. Also calls ``set_epoch`` on the dataset if it has one (for
    :func:`sample_rng`)."""
    dataloader.set_epoch(epoch)
    ds = getattr(dataloader, "dataset", None)
    if hasattr(ds, "set_epoch"):
        ds.set_epoch(epoch)
    if skip:
        skipped = accelerator.skip_first_batches(dataloader, skip)
        if hasattr(skipped, "set_epoch"):
            skipped.set_epoch(epoch)
        return skipped
    return dataloader


# ------------------------------------------------------------------------------------------------------ optimisation


def scaled_lr(cfg: OptimizerConfig, global_batch_size: int) -> float:
    """The learning rate for ``global_batch_size`` under ``cfg.scale_lr`` (see :class:`OptimizerConfig`), capped at
    ``cfg.max_lr``."""
    mode = {True: "linear", False: "none"}.get(cfg.scale_lr, cfg.scale_lr)  # type: ignore[call-overload]
    ratio = global_batch_size / cfg.base_batch_size
    if mode == "linear":
        lr = cfg.lr * ratio
    elif mode == "sqrt":
        lr = cfg.lr * math.sqrt(ratio)
    elif mode == "none":
        lr = cfg.lr
    else:
        raise ValueError(f"scale_lr must be 'none', 'linear' or 'sqrt', got {cfg.scale_lr!r}")
    return min(lr, cfg.max_lr) if cfg.max_lr is not None else lr


def lr_note(cfg: OptimizerConfig, global_batch_size: int) -> str | None:
    """A line for the start of a run whose global batch is not the recipe's (``None`` when it is)."""
    if global_batch_size == cfg.base_batch_size:
        return None
    return (f"global batch {global_batch_size} differs from the recipe's {cfg.base_batch_size}: lr "
            f"{scaled_lr(cfg, global_batch_size):g} (optim.scale_lr={cfg.scale_lr!r}; the recipe's lr {cfg.lr:g} is "
            f"for {cfg.base_batch_size}). Use train.grad_accum to reach the recipe's batch, or optim.scale_lr.")


def build_optimizer(params: Iterable, cfg: OptimizerConfig, global_batch_size: int) -> torch.optim.Optimizer:
    """SGD (momentum, dampening, weight decay; SLidR) or AdamW (SuperFlow) at :func:`scaled_lr`.

    ``params`` may be parameters or param-group dicts (a group's ``lr_scale`` multiplies the lr, e.g. a head at 100x).
    """
    lr = scaled_lr(cfg, global_batch_size)
    groups = list(params)
    if groups and isinstance(groups[0], dict):
        groups = [{**{k: v for k, v in g.items() if k != "lr_scale"}, "lr": g.get("lr", lr * g.get("lr_scale", 1.0))}
                  for g in groups]
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, dampening=cfg.dampening,
                               weight_decay=cfg.weight_decay)
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.name!r}; expected 'sgd' or 'adamw'")


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimizerConfig,
                    total_steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    """Per-optimiser-step schedule over ``total_steps``: ``cosine`` (optional linear warm-up, floor
    ``min_lr_ratio``), ``onecycle`` (torch's OneCycleLR, peak = each group's lr, ``pct_start``), or ``constant``."""
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    if cfg.scheduler == "onecycle":
        peaks = [g["lr"] for g in optimizer.param_groups]
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=peaks, total_steps=total_steps,
                                                   pct_start=cfg.pct_start, cycle_momentum=False)
    warm, floor = cfg.warmup_steps, cfg.min_lr_ratio

    def factor(step: int) -> float:
        if cfg.scheduler == "constant":
            return 1.0
        if step < warm:
            return (step + 1) / warm
        t = min(1.0, (step - warm) / max(1, total_steps - warm))
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * t))

    if cfg.scheduler not in ("cosine", "constant"):
        raise ValueError(f"unknown scheduler {cfg.scheduler!r}; expected 'cosine', 'onecycle' or 'constant'")
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def check_finite_loss(accelerator: Accelerator, loss: torch.Tensor, step: int,
                      output_dir: str | os.PathLike | None = None) -> None:
    """Raise :class:`NonFiniteLossError` on every process if ``loss`` is NaN/inf on any of them (call before
    ``backward``, so the bad state is never stepped into or saved). The message names the step and the last good
    checkpoint."""
    bad = torch.tensor([0.0 if torch.isfinite(loss.detach()).all() else 1.0], device=accelerator.device)
    if accelerator.num_processes > 1:
        bad = accelerator.reduce(bad, reduction="sum")
    if float(bad.item()) > 0:
        last = list_checkpoints(output_dir)[-1:] if output_dir is not None else []
        where = f"; last good checkpoint: {last[0][1]}" if last else "; no checkpoint was saved yet"
        raise NonFiniteLossError(f"non-finite loss ({float(loss.detach().float().mean())}) at step {step}: training "
                                 f"stopped without stepping or saving{where}. Lower the learning rate or check inputs.")


def finish(accelerator: Accelerator) -> None:
    """End a run: close the trackers and reset accelerate's process-wide state, so that another run (e.g. the demo's
    fine-tuning after pretraining) can build its own :func:`make_accelerator` in the same Python process."""
    from accelerate.state import AcceleratorState, GradientState

    accelerator.wait_for_everyone()
    accelerator.end_training()
    if accelerator.num_processes == 1:  # a distributed process group stays as it is
        AcceleratorState._reset_state(True)
        GradientState._reset_state()


def progress_bar(accelerator: Accelerator, total: int, initial: int = 0, desc: str = "steps"):
    """tqdm over optimiser steps, shown on the local main process only."""
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, disable=not accelerator.is_local_main_process,
                dynamic_ncols=True)


__all__ = [
    "SLIDR_SGD",
    "SUPERFLOW_ADAMW",
    "NonFiniteLossError",
    "OptimizerConfig",
    "build_optimizer",
    "build_scheduler",
    "check_finite_loss",
    "epoch_batches",
    "finish",
    "list_checkpoints",
    "make_accelerator",
    "make_dataloader",
    "progress_bar",
    "resume",
    "resume_position",
    "sample_rng",
    "save_checkpoint",
    "lr_note",
    "scaled_lr",
    "seed_everything",
]
