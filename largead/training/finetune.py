"""Downstream LiDAR semantic segmentation: linear probing or fine-tuning a (pretrained) LargeAD encoder.

    accelerate launch training/finetune.py --config training/configs/finetune-nuscenes.yaml \\
        --pretrained largead/minkunet34-seem-nkw --label-fraction 1 --output-dir runs/ft-nusc-1
    python training/finetune.py --config linear-probe-synthetic --output-dir runs/lp

SLidR's protocol by default (valeoai/SLidR ``config/semseg_*.yaml`` and ``downstream/``; see the configs): SGD momentum 0.9, dampening 0.1, weight decay 1e-4,
cosine schedule over 100 epochs, BatchNorm momentum 0.02 (block-internal BNs 0.1, as SLidR), random rotation about
z + x/y flips, loss CE + Lovasz-softmax; fine-tuning lr 0.02 / head lr 2.0 for a global batch of 16 (scaled
linearly with the batch), linear probing lr 0.05 with the backbone frozen and in eval mode.

Training is per voxel: a voxel's label is the label of the point that supplies its features (the first point in
the voxel, as the voxeliser keeps), so labels and features come from the same point. Evaluation (``evaluate.py``)
is per point. Checkpoints go to ``output_dir/checkpoints/checkpoint-{step}`` (``--resume_from_checkpoint latest``
continues; at least two while running, ``total_limit`` at the end), every step's loss to ``losses.jsonl``, the final
model to ``output_dir/model`` (a LargeADEncoder folder + ``segmentation.json``) and ``summary.json``. The run folder
behaves as pretraining's (lock, verified checkpoints, nothing written before the first step: a weights or data error
leaves it untouched). A run whose loss ends more than ``divergence_factor`` (10) times above its first step's fails
with :class:`~largead.trainer.TrainingDivergedError` and writes no final model, so no mIoU is ever reported from it
(e.g. a linear probe on a 4-step encoder: 4954 -> 2.75e6).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

from largead import trainer
from largead.config import ConfigError, check_run_config, config_to_dict, load_config
from largead.models.encoder import LargeADConfig, LargeADEncoder
from largead.trainer import OptimizerConfig
from largead.training import CONFIG_DIR, add_common_arguments, parse_cli

if TYPE_CHECKING:
    from largead.models.heads import SegmentationModel

FINAL_MODEL_DIR = "model"


# ------------------------------------------------------------------------------------------------------------ config


@dataclass
class DataConfig:
    """Which dataset and which labelled frames."""

    name: str = "synthetic"
    root: str | None = None
    train_split: str = "train"
    options: dict[str, Any] = field(default_factory=dict)  # extra reader options (synthetic world size, version...)
    label_fraction: float = 100.0  # percent of the training split with labels (SLidR's rules, largead.data.splits)
    augment: bool = True  # random rotation about z + x/y flips (SLidR's downstream augmentation)
    input_norm_key: str | None = None  # key of the encoder's input_norm to apply (default: name); see LargeADConfig
    norm_frames: int = 64  # training frames to estimate the intensity statistics from when the encoder lacks them


def _finetune_encoder() -> LargeADConfig:
    """SLidR's downstream encoder settings: BatchNorm momentum 0.02 (block BNs keep 0.1, SLidR's quirk)."""
    return LargeADConfig(bn_momentum=0.02, block_bn_momentum=0.1)


@dataclass
class FinetuneConfig:
    """The run. ``pretrained``: Hub id or folder of the encoder to start from (``None``: random initialisation with
    ``model``); ``model`` is the :class:`~largead.LargeADConfig` the protocol expects, which a pretrained encoder must
    match in voxelisation and input channels, and whose BatchNorm momenta are applied to it."""

    mode: Literal["linear_probe", "finetune"] = "finetune"
    data: DataConfig = field(default_factory=DataConfig)
    pretrained: str | None = None
    revision: str | None = None
    model: LargeADConfig = field(default_factory=_finetune_encoder)
    optim: OptimizerConfig = field(default_factory=lambda: OptimizerConfig(
        name="sgd", lr=0.02, base_batch_size=16, momentum=0.9, dampening=0.1, weight_decay=1e-4, scheduler="cosine"))
    head_lr: float | None = 2.0  # classifier lr at base_batch_size (None: same as optim.lr)
    batch_size: int = 16  # global (all processes, one optimiser step)
    grad_accum: int = 1
    epochs: int = 100
    max_steps: int | None = None  # stop early (smoke runs); the schedule still spans min(max_steps, epochs)
    ce_weight: float = 1.0
    lovasz_weight: float = 1.0
    seed: int = 0
    checkpointing_steps: int = 1000
    total_limit: int | None = 1  # checkpoints kept at the end (2+ while running; 0: none once finished; null: all)
    divergence_factor: float | None = 10.0  # fail if the loss ends above this x its first value (null: never)
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    log_with: str | None = None
    num_workers: int = 0


# -------------------------------------------------------------------------------------------------------------- data


class LabeledFrames(torch.utils.data.Dataset):
    """``(points (N, 4) float32, labels (N,) int64)`` of selected frames, augmented per ``(seed, epoch, index)``."""

    def __init__(self, dataset: Any, indices: np.ndarray, augment: bool, seed: int) -> None:
        self.dataset = dataset
        self.indices = np.asarray(indices, dtype=np.int64)
        self.augment = augment
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        frame = self.dataset[int(self.indices[i])]
        if frame.labels is None:
            raise ValueError(f"{self.dataset.name}: frame {int(self.indices[i])} ({frame.token}) has no labels")
        points = np.asarray(frame.points[:, :4], dtype=np.float32)
        if self.augment:
            points = rotate_flip(points, trainer.sample_rng(self.seed, self.epoch, i))
        return points, np.asarray(frame.labels, dtype=np.int64)


def rotate_flip(points: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """SLidR's downstream augmentation: random rotation about z, then x and y flips each with probability 0.5."""
    from largead.data.augment import random_rotate_flip_scale

    return random_rotate_flip_scale(points, rng, rotate=True, flip_p=0.5, scale_range=None)[0]


def _collate(items: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[tuple[np.ndarray, np.ndarray]]:
    return list(items)


def open_dataset(cfg: DataConfig, split: str) -> Any:
    from largead.data.registry import get_dataset

    return get_dataset(cfg.name, cfg.root, split, **cfg.options)


def check_labelled(dataset: Any, split: str) -> None:
    """Raise if ``dataset`` carries no labels for ``split`` (checked on its first frame)."""
    if len(dataset) == 0:
        raise ValueError(f"dataset {dataset.name!r} split {split!r} has no frames")
    if dataset[0].labels is None:
        raise ValueError(f"dataset {dataset.name!r} has no semantic labels for split {split!r} (frame 0 has none); "
                         f"fine-tuning and evaluation need a labelled split")


def training_indices(dataset: Any, percent: float) -> np.ndarray:
    """Frame indices of the ``percent`` label fraction (SLidR's rules: every k-th scene for sequence-unit datasets
    such as nuScenes, every k-th frame otherwise); ``ValueError`` when the fraction selects no frame."""
    from largead.data.splits import label_fraction_indices

    return np.asarray(label_fraction_indices(dataset, percent), dtype=np.int64)


# ------------------------------------------------------------------------------------------------------------- model


def build_encoder(cfg: FinetuneConfig) -> LargeADEncoder:
    """The pretrained encoder (checked against ``cfg.model``'s voxelisation and channels) or a randomly initialised
    one built from ``cfg.model``."""
    from largead.models.heads import check_encoder_matches

    if cfg.pretrained is None:
        return LargeADEncoder(cfg.model)
    enc = LargeADEncoder.from_pretrained(cfg.pretrained, revision=cfg.revision)
    check_encoder_matches(enc.config, cfg.model.grid, cfg.model.in_channels, source=f"checkpoint {cfg.pretrained!r}",
                          target=f"the {cfg.data.name} config")
    return enc


def adapt_input_norm(encoder: LargeADEncoder, dataset: Any, key: str, indices: Sequence[int] | None,
                     max_frames: int) -> tuple[float, float] | None:
    """Transfer to a dataset the encoder was not pretrained on: an encoder with per-dataset input normalisation but
    none for ``key`` gets ``key``'s intensity statistics, estimated from ``dataset``'s training frames
    (``indices``), stored in its config (so the fine-tuned model applies them at inference). Returns the statistics
    added, or ``None`` when there was nothing to do (the key is known, or the encoder takes raw intensities)."""
    from largead.pretrain.multisource import dataset_intensity_stats

    norm = encoder.config.input_norm
    if not norm or key in norm:
        return None
    stats = dataset_intensity_stats(dataset, max_frames, indices)
    encoder.config = dataclasses.replace(encoder.config, input_norm={**norm, key: stats})
    return stats


def build_model(cfg: FinetuneConfig, class_names: Sequence[str], train_set: Any = None,
                indices: Sequence[int] | None = None) -> SegmentationModel:
    """The encoder with a new classifier for ``class_names`` and the protocol's BatchNorm momenta; given the
    training data, an encoder pretrained with per-dataset normalisation learns this dataset's statistics
    (:func:`adapt_input_norm`)."""
    from largead.models.heads import SegmentationModel, set_bn_momentum

    enc = build_encoder(cfg)
    if train_set is not None:
        key = cfg.data.input_norm_key or cfg.data.name
        stats = adapt_input_norm(enc, train_set, key, indices, cfg.data.norm_frames)
        if stats is not None:
            known = sorted(k for k in enc.config.input_norm if k != key)
            print(f"finetune.py: {cfg.pretrained} has no input statistics for {key!r} (it knows {known}); estimated "
                  f"from {cfg.data.name}'s training frames: mean {stats[0]:.4g}, std {stats[1]:.4g}", file=sys.stderr)
    set_bn_momentum(enc, cfg.model.bn_momentum, cfg.model.block_bn_momentum)
    enc.config = dataclasses.replace(enc.config, bn_momentum=cfg.model.bn_momentum,
                                     block_bn_momentum=cfg.model.block_bn_momentum)  # saved with the model
    return SegmentationModel(enc, len(class_names), mode=cfg.mode, class_names=class_names)


# -------------------------------------------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="finetune.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="finetune-synthetic",
                   help="YAML file or the name of one in training/configs (e.g. linear-probe-nuscenes)")
    p.add_argument("--output-dir", required=True, help="run folder (checkpoints, logs, final model)")
    p.add_argument("--pretrained", default=None, help="Hub id or folder of a LargeAD encoder; 'none' = random init")
    p.add_argument("--mode", choices=("linear_probe", "finetune"), default=None)
    p.add_argument("--label-fraction", type=float, default=None, help="percent of labelled training frames")
    p.add_argument("--dataset", default=None, help="registered dataset name (overrides data.name)")
    p.add_argument("--root", default=None, help="dataset root (overrides data.root)")
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--cpu", action="store_true", help="run on CPU even if an accelerator is available")
    add_common_arguments(p)
    return parse_cli(p, argv)


def resolve_config_path(name: str) -> Path:
    """A YAML path, or the name of a config in ``training/configs`` (with or without ``.yaml``)."""
    from largead.config import resolve_config_path as resolve

    return resolve(name, CONFIG_DIR, prefixes=("finetune-", "linear-probe-"))


def load_run_config(args: argparse.Namespace) -> FinetuneConfig:
    """The typed config of a run: the YAML, then the flags (``--pretrained`` etc.), then ``key=value`` overrides."""
    from largead.config import format_override

    overrides = list(args.overrides)
    for key, value in (("pretrained", args.pretrained), ("mode", args.mode),
                       ("data.label_fraction", args.label_fraction), ("data.name", args.dataset),
                       ("data.root", args.root), ("max_steps", args.max_steps), ("seed", args.seed)):
        if value is not None:
            overrides.append(f"{key}={'null' if value == 'none' else format_override(value)}")
    cfg = load_config(FinetuneConfig, resolve_config_path(args.config), overrides)
    if cfg.batch_size < 1 or cfg.epochs < 1:
        raise ConfigError(f"{args.config}: batch_size and epochs must be >= 1")
    if cfg.total_limit is not None and cfg.total_limit < 0:
        raise ConfigError(f"{args.config}: total_limit must be >= 0 (null: keep all), got {cfg.total_limit}")
    return cfg


def main(args: argparse.Namespace) -> Path:
    """Train; returns the folder of the final model (``output_dir/model``).

    Holds ``output_dir``'s lock while it runs and writes nothing there before its first step succeeds (a weights or
    data error leaves the folder as it was). ``output_dir/losses.jsonl`` logs every step's loss (mean over processes)
    and lr. A finished run only says so. A run whose loss diverges (:func:`largead.trainer.divergence` with
    ``divergence_factor``) raises :class:`~largead.trainer.TrainingDivergedError` without writing the final model, so
    no metric is ever computed from it; its checkpoints stay for inspection."""
    from largead.models.losses import SegmentationLoss
    from largead.runfolder import LOSSES_FILE, LossLog, run_write_error

    cfg = load_run_config(args)
    out = Path(args.output_dir)
    cfg_dict = config_to_dict(cfg)
    resume_arg = None if str(args.resume_from_checkpoint).lower() == "none" else args.resume_from_checkpoint
    acc = trainer.make_accelerator(out, cfg.mixed_precision, cfg.grad_accum, cfg.log_with, cfg.seed,
                                   cfg.total_limit, cpu=args.cpu)
    is_main = acc.is_main_process
    with trainer.RunFolder(acc, out) as run:
        check_run_config(out, cfg_dict, force=args.force, write=False)
        done = _finished(out, None if args.force else "stored") if resume_arg == "latest" else None
        if done is not None:
            if is_main:
                print(f"{cfg.mode} in {out} already finished at step {done['steps']} of {done['total_steps']}; "
                      f"nothing to do (model: {done['model_dir']})", flush=True)
            trainer.finish(acc)
            return Path(done["model_dir"])

        train_set = open_dataset(cfg.data, cfg.data.train_split)
        check_labelled(train_set, cfg.data.train_split)
        indices = training_indices(train_set, cfg.data.label_fraction)
        per_process, rem = divmod(cfg.batch_size, acc.num_processes * cfg.grad_accum)
        if rem or per_process < 1:
            raise ConfigError(f"batch_size {cfg.batch_size} is not divisible by {acc.num_processes} processes x "
                              f"{cfg.grad_accum} accumulation steps")
        frames = LabeledFrames(train_set, indices, cfg.data.augment, cfg.seed)
        drop_last = len(indices) >= cfg.batch_size
        loader = trainer.make_dataloader(frames, per_process, collate_fn=_collate, seed=cfg.seed,
                                         num_workers=cfg.num_workers, drop_last=drop_last)

        model = build_model(cfg, train_set.class_names, train_set, indices)
        lr = trainer.scaled_lr(cfg.optim, cfg.batch_size)
        head_scale = 1.0 if cfg.head_lr is None else cfg.head_lr / cfg.optim.lr
        groups = [{"params": g["params"], "lr_scale": head_scale if g["name"] == "head" else 1.0}
                  for g in model.param_groups(lr)]
        optimizer = trainer.build_optimizer(groups, cfg.optim, cfg.batch_size)
        model, optimizer, loader = acc.prepare(model, optimizer, loader)
        steps_per_epoch = math.ceil(len(loader) / cfg.grad_accum)
        total = (cfg.epochs * steps_per_epoch if cfg.max_steps is None
                 else min(cfg.max_steps, cfg.epochs * steps_per_epoch))
        scheduler = trainer.build_scheduler(optimizer, cfg.optim, total)
        acc.register_for_checkpointing(scheduler)
        step = trainer.resume(acc, out, resume_arg)
        log = LossLog(out / LOSSES_FILE, step, write=is_main)
        epoch, skip = trainer.resume_position(step, len(loader), cfg.grad_accum)

        net = acc.unwrap_model(model)
        norm_key = cfg.data.input_norm_key or cfg.data.name
        criterion = SegmentationLoss(ce_weight=cfg.ce_weight, lovasz_weight=cfg.lovasz_weight)
        # the bar is closed (ending its line) before an error message is printed
        with trainer.progress_bar(acc, total, min(step, total),
                                  desc=f"{cfg.mode} {cfg.data.name} {cfg.data.label_fraction:g}%") as bar:
            model.train()
            micro: list[torch.Tensor] = []
            while step < total:
                for items in trainer.epoch_batches(acc, loader, epoch, skip):
                    with acc.accumulate(model):
                        batch = net.encoder.voxelize([p for p, _ in items], dataset=norm_key).to(acc.device)
                        labels = torch.from_numpy(np.concatenate([lab for _, lab in items])).to(acc.device)
                        logits = model(batch)
                        loss = criterion(logits, labels[batch.first_index])
                        trainer.check_finite_loss(acc, loss, step, out)
                        acc.backward(loss)
                        optimizer.step()
                        optimizer.zero_grad(set_to_none=True)
                    micro.append(loss.detach().float())
                    if not acc.sync_gradients:
                        continue
                    scheduler.step()
                    step += 1
                    if not run.committed:  # the first step succeeded: now the run writes into output_dir
                        if is_main:
                            check_run_config(out, cfg_dict, force=args.force, write=True)
                        if cfg.log_with:
                            acc.init_trackers("finetune")
                        run.commit()
                    mean = float(acc.reduce(torch.stack(micro).mean(), reduction="mean"))
                    micro = []
                    record = {"step": step, "loss": mean, "lr": scheduler.get_last_lr()[0]}
                    bar.update(1)
                    bar.set_postfix(loss=f"{mean:.4f}")
                    if cfg.log_with:
                        acc.log({"loss": mean, "lr": record["lr"]}, step=step)
                    try:
                        log.append(record)
                    except OSError as err:
                        raise run_write_error(err, log.path, f"step {step} of {LOSSES_FILE}", out) from err
                    if step % cfg.checkpointing_steps == 0 or step == total:
                        log.sync()
                        trainer.save_checkpoint(acc, out, step, cfg.total_limit)
                    if step >= total:
                        break
                epoch, skip = epoch + 1, 0
        log.close()

        why = trainer.divergence([r["loss"] for r in log.records], cfg.divergence_factor)
        if why is not None:
            raise trainer.TrainingDivergedError(
                f"{cfg.mode} diverged: {why}; the final model is not written, so no metric is computed from it "
                f"(checkpoints: {out / 'checkpoints'}). Lower optim.lr / head_lr, or check the encoder's feature "
                "scale; divergence_factor=null disables this check")
        final = out / FINAL_MODEL_DIR
        if not run.committed:  # no step ran (resumed at the stop step): the export is this run's first output
            if is_main:
                check_run_config(out, cfg_dict, force=args.force, write=True)
            run.commit()
        acc.wait_for_everyone()
        if is_main:
            from largead.fileio import atomic_directory, atomic_write_json
            from largead.runfolder import SUMMARY_FILE

            summary = {"steps": step, "total_steps": total,
                       "final_loss": log.records[-1]["loss"] if log.records else None,
                       "model_dir": str(final), "finished": step >= total}
            try:
                with atomic_directory(final) as tmp:
                    acc.unwrap_model(model).save_pretrained(
                        tmp, dataset=cfg.data.name, dataset_options=cfg.data.options, input_norm_key=norm_key,
                        label_fraction=cfg.data.label_fraction,
                        pretrained=cfg.pretrained, steps=step)
                atomic_write_json(out / SUMMARY_FILE, summary)
            except (OSError, RuntimeError) as err:
                raise run_write_error(err, out, "the final model", out) from err
        trainer.finalize_checkpoints(acc, out, cfg.total_limit, finished=step >= total)
        trainer.finish(acc)
    return final


def _finished(out: Path, total: str | None) -> dict[str, Any] | None:
    """The stored summary of a finished run in ``out`` whose final model exists (``total`` ``"stored"``: the config
    is unchanged, so the stored schedule holds; ``None``: unknown, never finished)."""
    import json

    from largead.runfolder import SUMMARY_FILE

    if total is None:
        return None
    try:
        done = json.loads((out / SUMMARY_FILE).read_text())
        finished = int(done["steps"]) >= int(done["total_steps"])
        model_dir = Path(done["model_dir"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return done if finished and (model_dir / "segmentation.json").is_file() else None


def cli(argv: Sequence[str] | None = None) -> None:
    """``training/finetune.py`` / ``python -m largead.training.finetune``; errors are one line."""
    from largead.training import run_cli

    run_cli("finetune.py", lambda: print(f"final model: {main(parse_args(argv))}"))


if __name__ == "__main__":
    cli()
