"""LargeAD pretraining: distil a frozen 2D teacher into a MinkUNet LiDAR encoder (diffusers-style).

    accelerate launch training/pretrain.py --config training/configs/synthetic.yaml --output-dir outputs/pretrain
    python training/pretrain.py --config synthetic-tiny --output-dir /tmp/run --max-steps 4 train.batch_size=1
    accelerate launch -m largead.training.pretrain --config minkunet34-seem-nkw ...     # same, from an install

``--config`` takes a YAML path or the name of a file in ``training/configs/``; trailing ``key=value`` arguments
override config keys (dotted, values parsed as YAML). ``--resume_from_checkpoint latest`` (the default) continues
from the newest ``checkpoint-{step}`` in ``output_dir`` that passes its manifest check (a damaged newer one is
reported in one line and skipped); ``--resume_from_checkpoint checkpoint-N`` resumes from that one (it must verify;
newer checkpoints are replaced as the run passes them). A stored ``run_config.json`` that differs from this run's
config is refused, naming the differing keys, unless ``--force`` (then the optimiser and scheduler state still come
from the checkpoint: a changed ``optim.lr`` does not take effect). ``--max_steps`` stops the run early (the schedule
still spans ``train.steps``), e.g. to split a run into pieces; one beyond the schedule is reported and capped.

What a run guarantees (:class:`largead.trainer.RunFolder`, :func:`largead.trainer.save_checkpoint`): one run per
``output_dir`` (a second launch is refused naming the holder's pid, host and start time); nothing written there
before the first step succeeds; a run killed at any moment resumes bit-identical; each checkpoint carries a
manifest (sizes, SHA-256) written last; a full or read-only disk is one line naming the intact checkpoint; nothing in
a checkpoint is unpickled with code execution. ``output_dir`` holds ``run_config.json``, ``losses.jsonl`` (every
step: loss terms, lr, the samples each process used, replica checksums when distributed), ``checkpoints/`` (at
least two while running, ``train.checkpoint_total_limit`` at the end, default 1), ``segment_cache/``,
``encoder/`` (the Hub-ready folder, ``LargeADEncoder.save_pretrained`` + README.md model card, written atomically
at the end) and ``summary.json`` (steps, final loss, encoder path, time; also printed). Rerunning a finished run says
so and exits 0.

``--profile [N]`` (default 5) builds the run exactly as above (:func:`build_run`) with ``train.num_workers`` forced to
0, runs 1 warm-up step and N timed steps, prints where a step's time goes (data loading, temporal segments, point-pixel
pairing, augmentation, collate + voxelisation, teacher forward, 3D forward, superpixel pooling, losses, backward,
optimiser step, other; :mod:`largead.profiling`) and exits; it needs no ``--output-dir`` and writes nothing there
(``--profile-clock cpu`` times this process's CPU time instead of wall time)::

    OMP_NUM_THREADS=1 python training/pretrain.py --config synthetic --profile 5 --profile-clock cpu

``train.mixed_precision: bf16`` runs the encoder and the teacher under bf16 autocast (CPU or GPU); superpixel
pooling and the loss terms always run in fp32, and weights, checkpoints and the exported encoder stay float32.

Several processes on a CPU-only machine: ``accelerate launch --multi_gpu --num_processes 2 training/pretrain.py ...``
(accelerate's ``--cpu`` flag starts a single process unless an mpirun hostfile is configured).

``training/pretrain.py`` is a thin launcher of this module; ``main(args)`` is importable without side effects
(the ``largead demo`` command and the tests call it).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from largead.models.encoder import LargeADConfig

if TYPE_CHECKING:
    import torch
from largead.pretrain.data import PretrainDataConfig
from largead.pretrain.model import ObjectiveConfig
from largead.trainer import OptimizerConfig
from largead.training import CONFIG_DIR, add_common_arguments, parse_cli


# --------------------------------------------------------------------------------------------------- configuration
@dataclass
class DataSourceConfig:
    """One pretraining dataset: ``get_dataset(name, root, split, **options)``; ``label`` names it in the batch and in
    ``input_norm`` (default ``name``); ``ratio`` is its share in multi-source sampling; ``input_norm`` ``[mean, std]``
    of its intensity (``None``: estimated from ``norm_frames`` frames when normalising); ``superpixels`` overrides
    the superpixel source options for this dataset (e.g. its ``root``)."""

    name: str
    root: str | None = None
    split: str = "train"
    label: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    ratio: float = 1.0
    input_norm: list[float] | None = None
    superpixels: dict[str, Any] = field(default_factory=dict)
    calibration_error: float = 0.0  # calibration stress test: miscalibrate camera extrinsics by this fraction when
    # pairing points with pixels (largead.evaluation.calibration: fraction x 10 deg rotation, x 0.5 m translation)


@dataclass
class SuperpixelConfig:
    """``largead.superpixels.get_source(source, **options)`` (precomputed sources read PNGs)."""

    source: str = "slic"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class TeacherConfig:
    """Frozen 2D backbone + trainable head: ``name`` is ``synthetic`` (the synthetic world's teacher) or a backbone
    understood by ``largead.models.image.ImageTeacher`` (vit-s, vit-b, vit-l, resnet50; ``resnet50`` needs
    ``options.checkpoint``, the MoCo v2 file). ``random_init: true`` builds the named architecture with random
    weights (tests and dry runs, no download): an explicit opt-in, recorded in the run config and the card, and the
    result is never labelled as a zoo entry."""

    name: str = "vit-b"
    random_init: bool = False
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainConfig:
    """Length: exactly one of ``steps`` (optimiser steps the schedule spans) or ``epochs`` (passes over the data;
    steps = epochs x batches per epoch / grad_accum). ``batch_size`` is per process (global batch = batch_size x
    processes x grad_accum); a checkpoint every ``checkpoint_every`` steps (0: only at the end).
    ``checkpoint_total_limit``: checkpoints kept when the run ends (default 1, the final one; 0: none once the
    schedule is complete and the encoder exported, so the run cannot be extended; ``null``: all); while it runs at
    least two are kept, so a damaged newest checkpoint always has an intact predecessor."""

    steps: int | None = None
    epochs: int | None = None
    batch_size: int = 4
    grad_accum: int = 1
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    seed: int = 0
    checkpoint_every: int = 500
    checkpoint_total_limit: int | None = 1
    log_every: int = 10
    num_workers: int = 0
    log_with: str | None = "tensorboard"


@dataclass
class PretrainConfig:
    """The whole run. ``normalize_inputs``: per-dataset intensity normalisation (LargeAD), stored in the encoder's
    ``config.input_norm``; ``norm_frames``: frames per dataset used to estimate missing statistics; ``segment_cache``:
    folder of cached segments (default ``<output_dir>/segment_cache``); ``zoo_name``: the zoo entry this config
    produces (names the model card). ``model`` is the encoder's :class:`~largead.LargeADConfig` (its
    ``input_norm`` is filled in from the data; the output is always L2-normalised for the contrastive terms)."""

    name: str
    data: list[DataSourceConfig]
    superpixels: SuperpixelConfig = field(default_factory=SuperpixelConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    model: LargeADConfig = field(default_factory=LargeADConfig)
    optim: OptimizerConfig = field(default_factory=OptimizerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    pipeline: PretrainDataConfig = field(default_factory=PretrainDataConfig)
    normalize_inputs: bool = False
    norm_frames: int = 16
    segment_cache: str | None = None
    zoo_name: str | None = None


def resolve_config_path(name: str) -> Path:
    """A path, or the name of a config in ``training/configs`` (with or without ``.yaml``)."""
    from largead.config import resolve_config_path as resolve

    return resolve(name, CONFIG_DIR)


def load_pretrain_config(name: str, overrides: Sequence[str] = ()) -> PretrainConfig:
    """Parse a pretraining config (path or name) with ``key=value`` overrides into the typed config."""
    from largead.config import load_config

    return load_config(PretrainConfig, resolve_config_path(name), overrides)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="pretrain.py", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="YAML file or name in training/configs (e.g. synthetic)")
    parser.add_argument("--output-dir", default=None, help="run folder: checkpoints/, logs/, encoder/ (required "
                                                             "unless --profile)")
    parser.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (schedule unchanged)")
    parser.add_argument("--profile", type=int, nargs="?", const=PROFILE_STEPS, default=None, metavar="N",
                        help=f"time 1 warm-up step + N steps (default {PROFILE_STEPS}) of this config in the main "
                             "process (num_workers 0), print where a step's time goes and exit; writes nothing into "
                             "--output-dir (not needed)")
    parser.add_argument("--profile-clock", choices=("wall", "cpu"), default="wall",
                        help="--profile's clock: wall time (default) or this process's CPU time (steadier on a shared "
                             "machine with one torch thread; CPU only)")
    add_common_arguments(parser)
    argv = list(sys.argv[1:] if argv is None else argv)
    for i, a in enumerate(argv[:-1]):  # "--profile key=value": the flag without N, not N = "key=value"
        if a == "--profile" and not argv[i + 1].lstrip("-").isdigit():
            argv[i] = f"--profile={PROFILE_STEPS}"
    args = parse_cli(parser, argv)
    if args.output_dir is None and args.profile is None:
        parser.error("the following arguments are required: --output-dir (or --profile)")
    if args.profile is not None and args.profile < 1:
        parser.error(f"--profile N needs N >= 1, got {args.profile}")
    return args


PROFILE_STEPS = 5
"""Timed steps of ``--profile`` without a number (after one warm-up step)."""

PROFILE_ROWS = ["data loading", "temporal segments", "point-pixel pairing", "augmentation", "collate + voxelisation",
                "teacher forward", "3D forward", "superpixel pooling", "losses", "backward", "optimiser step"]
"""The sections of a pretraining step (:mod:`largead.profiling`), in the order ``--profile`` prints them."""


# ----------------------------------------------------------------------------------------------------- building
def build_teacher(cfg: TeacherConfig, out_channels: int, datasets: Sequence[Any]) -> torch.nn.Module:
    """The frozen 2D teacher with a trainable head to ``out_channels`` (``largead.models.image``).

    ``synthetic``: :class:`SyntheticTeacher` trained once on the synthetic datasets' camera images and masks (cached;
    options ``steps``, ``batch_size``, ``lr``, ``cache_dir``); otherwise ``ImageTeacher.from_pretrained_backbone(name,
    **options)`` (vit-s/vit-b/vit-l = DINOv2, resnet50, a Hub id or a local folder; options ``dilation``,
    ``local_files_only``)."""
    from largead.models import image

    if cfg.name != "synthetic":
        return image.ImageTeacher.from_pretrained_backbone(cfg.name, out_dim=out_channels,
                                                           random_init=cfg.random_init, **cfg.options)
    if cfg.random_init:
        raise ValueError("teacher.random_init applies to the named 2D backbones (vit-s/b/l, resnet50), not to the "
                         "synthetic world's teacher")
    from largead.data.synthetic import SYNTHETIC_CLASSES

    bad = [getattr(d, "name", "?") for d in datasets if not hasattr(d, "world")]
    if bad:
        raise ValueError(f"teacher 'synthetic' needs synthetic-world datasets, got {bad}")
    key = {"worlds": [dataclasses.asdict(d.config) for d in datasets], "frames": [len(d) for d in datasets],
           "splits": [d.split for d in datasets]}

    def data():
        return image.camera_training_data(c for d in datasets for i in range(len(d)) for c in d[i].cameras)

    return image.SyntheticTeacher.build(key, data, len(SYNTHETIC_CLASSES), out_dim=out_channels, **cfg.options)


def _open_datasets(cfg: PretrainConfig) -> tuple[list[Any], list[str]]:
    from largead.data import get_dataset

    datasets = [get_dataset(d.name, d.root, d.split, **d.options) for d in cfg.data]
    labels = [d.label or d.name for d in cfg.data]
    return datasets, labels


def pairing_datasets(cfg: PretrainConfig, datasets: Sequence[Any]) -> list[Any]:
    """The datasets that pair points with pixels: each source with ``calibration_error > 0`` is wrapped so its
    camera extrinsics are miscalibrated by that fraction (the calibration stress test; the images, the teacher and
    the temporal segments are untouched)."""
    from largead.evaluation.calibration import PerturbedExtrinsics

    return [PerturbedExtrinsics(ds, d.calibration_error, seed=cfg.train.seed) if d.calibration_error else ds
            for d, ds in zip(cfg.data, datasets, strict=True)]


def _input_norm(cfg: PretrainConfig, datasets: Sequence[Any], labels: Sequence[str]) -> dict[str, list[float]]:
    """Per-dataset ``[mean, std]`` (given, or estimated from evenly spaced frames)."""
    from largead.pretrain.multisource import dataset_intensity_stats

    if not cfg.normalize_inputs:
        return {}
    norm = {}
    for dcfg, ds, label in zip(cfg.data, datasets, labels, strict=True):
        if dcfg.input_norm is not None:
            norm[label] = [float(v) for v in dcfg.input_norm]
            continue
        norm[label] = list(dataset_intensity_stats(ds, cfg.norm_frames))
    return norm


@dataclass
class BuiltRun:
    """What :func:`build_run` builds: the prepared ``model``, ``optimizer``, ``loader`` and ``scheduler``, the
    schedule's length ``total`` (optimiser steps) and the ``global_batch`` size."""

    model: Any
    optimizer: Any
    loader: Any
    scheduler: Any
    total: int
    global_batch: int


def build_run(cfg: PretrainConfig, acc: Any, segment_cache: str | Path | None) -> BuiltRun:
    """Everything a run needs, prepared by ``acc``: the datasets (and their intensity statistics), the teacher, the
    encoder, the pretraining dataset and loader (``train.num_workers`` DataLoader workers), optimiser and scheduler.
    Shared by a normal run and ``--profile``. ``segment_cache``: the folder of cached temporal segments."""
    import torch

    from largead import LargeADEncoder
    from largead import trainer as T
    from largead.pretrain.data import PretrainDataset, collate_pretrain
    from largead.pretrain.model import PretrainModel
    from largead.pretrain.multisource import MultiSourceSampler
    from largead.pretrain.temporal import SegmentCache
    from largead.superpixels import get_source

    tc = cfg.train
    datasets, labels = _open_datasets(cfg)
    input_norm = _input_norm(cfg, datasets, labels)
    mc = cfg.model
    enc_cfg = dataclasses.replace(mc, normalize_output=True, input_norm=input_norm)
    with acc.main_process_first():  # a teacher trained on first use is trained (and cached) once
        teacher = build_teacher(cfg.teacher, mc.out_channels, datasets)
    torch.manual_seed(tc.seed)  # identical initial weights whatever the process or cache state
    encoder = LargeADEncoder(enc_cfg)
    teacher.head.reset_parameters()
    model = PretrainModel(encoder, teacher, cfg.objective)

    sources = [get_source(cfg.superpixels.source, **{**cfg.superpixels.options, **d.superpixels})
               for d in cfg.data]
    cache = SegmentCache(segment_cache)
    dataset = PretrainDataset(pairing_datasets(cfg, datasets), sources, cfg.pipeline, cache, seed=tc.seed,
                              names=labels)
    sampler = None
    if len(datasets) > 1:  # the index is grouped by dataset, in config order, as the sampler expects
        sampler = MultiSourceSampler(dataset.sizes(), [d.ratio for d in cfg.data], seed=tc.seed)
    collate = functools.partial(collate_pretrain, grid=encoder.grid, feature_mode=mc.feature_mode,
                                input_norm=input_norm, datasets=labels)
    loader = T.make_dataloader(dataset, tc.batch_size, collate, seed=tc.seed, num_workers=tc.num_workers,
                               sampler=sampler)
    global_batch = tc.batch_size * acc.num_processes * tc.grad_accum
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = T.build_optimizer(params, cfg.optim, global_batch)
    note = T.lr_note(cfg.optim, global_batch)
    if note:
        acc.print(f"pretrain.py: {note}")
    model, optimizer, loader = acc.prepare(model, optimizer, loader)
    total = tc.steps if tc.steps is not None else max(1, tc.epochs * len(loader) // tc.grad_accum)
    scheduler = T.build_scheduler(optimizer, cfg.optim, total)
    return BuiltRun(model, optimizer, loader, scheduler, total, global_batch)


def train_step(acc: Any, model: Any, optimizer: Any, batch: Any, step: int, total: int, out: Path | None) -> dict:
    """One micro-batch: forward (``progress = step / total`` for L_cdp's warm-up), the finiteness check, backward and
    the optimiser step (applied by accelerate once per ``grad_accum`` micro-batches); returns the loss terms. Profiled
    as the sections ``backward`` and ``optimiser step`` (the forward's sections are in the model)."""
    from largead import trainer as T
    from largead.profiling import section

    with acc.accumulate(model):
        terms = model(batch, progress=step / total)  # L_cdp's warm-up reads the schedule
        loss = terms["loss"]
        T.check_finite_loss(acc, loss, step, out)
        with section("backward"):
            acc.backward(loss)
        with section("optimiser step"):
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    return terms


# --------------------------------------------------------------------------------------------------------- main
def main(args: argparse.Namespace) -> dict[str, Any]:
    """Run (or resume) pretraining; returns ``{"output_dir", "encoder_dir", "steps", "total_steps", "losses",
    "final_loss", "seconds", "finished"}`` (``losses``: the global mean loss of every optimiser step run by this call;
    ``finished``: the schedule is complete).

    The run holds ``output_dir``'s lock while it runs (:class:`largead.trainer.RunFolder`) and writes nothing there
    before its first step succeeds. A run that already reached its stop step only says so (and exports the encoder
    if it is missing), and ``--max-steps`` beyond the schedule is reported and capped."""
    import torch
    from accelerate.utils import gather_object

    from largead import trainer as T
    from largead.config import ConfigError, check_run_config, config_to_dict
    from largead.runfolder import LOSSES_FILE, LossLog

    cfg = load_pretrain_config(args.config, args.overrides)
    if getattr(args, "profile", None) is not None:
        return profile(cfg, args.profile, args.config, clock=getattr(args, "profile_clock", "wall"))
    out = Path(args.output_dir)
    tc = cfg.train
    if (tc.steps is None) == (tc.epochs is None):
        raise ConfigError(f"{args.config}: set exactly one of train.steps and train.epochs")
    if tc.checkpoint_total_limit is not None and tc.checkpoint_total_limit < 0:
        raise ConfigError(f"{args.config}: train.checkpoint_total_limit must be >= 0 (null: keep all), got "
                          f"{tc.checkpoint_total_limit}")
    if args.max_steps is not None and args.max_steps < 1:
        raise ValueError(f"--max-steps must be >= 1, got {args.max_steps}")
    cfg_dict = config_to_dict(cfg)
    resume_arg = None if str(args.resume_from_checkpoint).lower() == "none" else args.resume_from_checkpoint
    acc = T.make_accelerator(out, tc.mixed_precision, tc.grad_accum, tc.log_with, tc.seed, tc.checkpoint_total_limit)
    is_main = acc.is_main_process
    start = time.time()
    with T.RunFolder(acc, out) as run:
        check_run_config(out, cfg_dict, force=args.force, write=False)
        # the schedule's length when known before building the data (train.steps, or an unchanged stored config)
        known_total = tc.steps if tc.steps is not None else (None if args.force else "stored")
        done = _finished(out, args.max_steps, known_total) if resume_arg == "latest" else None
        if done is not None:  # nothing to do: say so without building anything
            if acc.is_main_process:
                _warn_max_steps(args.max_steps, done["total_steps"], tc)
                where = (f"already finished at step {done['steps']} of {done['total_steps']}" if done["finished"] else
                         f"already at step {done['steps']} of {done['total_steps']} (--max-steps {args.max_steps})")
                print(f"pretraining in {out} {where}; nothing to do (encoder: {done['encoder_dir']})", flush=True)
            T.finish(acc)
            return {**done, "output_dir": str(out), "losses": [], "seconds": 0.0}

        built = build_run(cfg, acc, cfg.segment_cache or out / "segment_cache")
        model, optimizer, loader, scheduler = built.model, built.optimizer, built.loader, built.scheduler
        total, global_batch = built.total, built.global_batch
        acc.register_for_checkpointing(scheduler)

        if acc.is_main_process:
            _warn_max_steps(args.max_steps, total, tc)
        stop = min(total, args.max_steps) if args.max_steps is not None else total
        step = T.resume(acc, out, resume_arg)
        log = LossLog(out / LOSSES_FILE, step, write=acc.is_main_process)
        epoch, skip = T.resume_position(step, len(loader), tc.grad_accum)
        # the bar is closed (ending its line) before an error message is printed
        with T.progress_bar(acc, stop, initial=min(step, stop)) as bar:
            losses: list[float] = []
            micro: list[torch.Tensor] = []
            seen: list[int] = []
            while step < stop:
                for batch in T.epoch_batches(acc, loader, epoch, skip):
                    terms = train_step(acc, model, optimizer, batch, step, total, out)
                    micro.append(torch.stack([terms[k].detach().float() for k in sorted(terms)]))
                    seen.extend(batch.indices)
                    if not acc.sync_gradients:
                        continue
                    scheduler.step()
                    step += 1
                    if not run.committed:  # the first step succeeded: now the run writes into output_dir
                        if acc.is_main_process:
                            check_run_config(out, cfg_dict, force=args.force, write=True)
                        if tc.log_with:
                            acc.init_trackers("pretrain")
                        run.commit()
                    mean = acc.reduce(torch.stack(micro).mean(0), reduction="mean")
                    logs: dict[str, Any] = {k: float(v) for k, v in zip(sorted(terms), mean.tolist(), strict=True)}
                    logs["lr"] = scheduler.get_last_lr()[0]
                    # which samples each process used in this step, and a checksum of each replica's weights
                    logs["samples"] = gather_object([seen])
                    if acc.num_processes > 1:
                        logs["replica_checksums"] = gather_object([_checksum(model)])
                    micro, seen = [], []
                    losses.append(logs["loss"])
                    bar.update(1)
                    bar.set_postfix(loss=f"{logs['loss']:.4f}")
                    if tc.log_with and (step % tc.log_every == 0 or step == stop):
                        acc.log({k: v for k, v in logs.items() if isinstance(v, float)}, step=step)
                    _append(log, {"step": step, **logs}, out, step)
                    if (tc.checkpoint_every and step % tc.checkpoint_every == 0) or step == stop:
                        log.sync()
                        T.save_checkpoint(acc, out, step, tc.checkpoint_total_limit)
                    if step >= stop:
                        break
                epoch, skip = epoch + 1, 0
        log.close()
        seconds = time.time() - start
        encoder_dir = out / "encoder"
        final_loss = log.records[-1]["loss"] if log.records else None
        summary = {"steps": step, "total_steps": total, "final_loss": final_loss, "encoder_dir": str(encoder_dir),
                   "seconds": round(seconds, 3), "finished": step >= total}
        if not run.committed:  # no step ran (resumed at the stop step): the export is this run's first output
            if acc.is_main_process:
                check_run_config(out, cfg_dict, force=args.force, write=True)
            run.commit()
        acc.wait_for_everyone()
        if acc.is_main_process:
            unwrapped = acc.unwrap_model(model)
            recipe = {**cfg_dict, "datasets": [d.name for d in cfg.data],
                      "superpixels": _superpixel_kind(cfg.superpixels), "teacher": cfg.teacher.name,
                      "teacher_weights": getattr(unwrapped.teacher, "weights", None), "steps_done": step,
                      "global_batch_size": global_batch, "effective_lr": T.scaled_lr(cfg.optim, global_batch)}
            _export(unwrapped.encoder, encoder_dir, recipe, cfg, summary, out)
        T.finalize_checkpoints(acc, out, tc.checkpoint_total_limit, finished=step >= total)
        T.finish(acc)
    if is_main:
        _print_summary(summary, out, args.max_steps)
    return {"output_dir": str(out), "losses": losses, **summary}


def profile(cfg: PretrainConfig, steps: int = PROFILE_STEPS, name: str | None = None, clock: str = "wall"
            ) -> dict[str, Any]:
    """``--profile``: build the run as :func:`main` does (:func:`build_run`) with ``train.num_workers`` forced to 0,
    run 1 warm-up step and ``steps`` timed steps (:func:`train_step`, one micro-batch each), print the table of
    :class:`largead.profiling.Profiler` (section, ms/step, % of step; ``clock`` ``"wall"`` or ``"cpu"``) and return
    ``{"rows", "steps", "step_ms", "text"}``.

    Nothing is written into an output folder: the accelerator's project folder and, unless ``segment_cache`` is set,
    the segment cache are a temporary folder removed at the end (a synthetic teacher trained on first use is still
    cached where it always is, ``$LARGEAD_CACHE``). Data is loaded in the main process so its time is attributable;
    in a real run DataLoader workers (``train.num_workers``) load and augment the next batches while this process
    computes, so the data rows overlap with the compute rows. Temporal segments are computed on first use (the first
    epoch) and read from the segment cache afterwards."""
    import tempfile

    import torch

    from largead import trainer as T
    from largead.profiling import Profiler, section

    if steps < 1:
        raise ValueError(f"--profile needs at least 1 step, got {steps}")
    tc = dataclasses.replace(cfg.train, num_workers=0, log_with=None)
    cfg = dataclasses.replace(cfg, train=tc)
    with tempfile.TemporaryDirectory(prefix="largead-profile-") as tmp:
        acc = T.make_accelerator(tmp, tc.mixed_precision, tc.grad_accum, None, tc.seed)
        on_gpu = acc.device.type == "cuda"
        try:
            built = build_run(cfg, acc, cfg.segment_cache or Path(tmp) / "segment_cache")
            model, optimizer, loader = built.model, built.optimizer, built.loader

            def batches():
                epoch = 0
                while True:
                    yield from T.epoch_batches(acc, loader, epoch)
                    epoch += 1

            it = batches()
            prof = Profiler(order=PROFILE_ROWS, clock=clock)
            with prof:
                for step in range(steps + 1):
                    with prof.step():
                        batch = next(it)
                        train_step(acc, model, optimizer, batch, min(step, built.total - 1), built.total, None)
                        with section("optimiser step"):
                            built.scheduler.step()
                    if step == 0:
                        prof.reset()  # the warm-up step (first-call allocations, lazy initialisation) is not timed
        finally:
            T.finish(acc)
    where = "GPU" if on_gpu else f"CPU, {torch.get_num_threads()} thread(s)"
    head = (f"pretrain.py --profile: {name or cfg.name}, {steps} step(s) timed after 1 warm-up, batch size "
            f"{tc.batch_size} per step (one micro-batch), mixed precision {tc.mixed_precision}, {where}; "
            f"{'wall time' if clock == 'wall' else 'CPU time of this process'}.\n"
            "Data is loaded in the main process (num_workers forced to 0) so its time is attributable: with "
            "train.num_workers > 0 (and pinned memory on GPU) DataLoader workers prepare the next batches while this "
            "process computes, so the data rows overlap with the compute rows. Temporal segments are computed on "
            "first use and read from the segment cache in later epochs.")
    text = head + "\n\n" + prof.table()
    print(text, flush=True)
    return {"rows": prof.rows(), "steps": prof.steps, "step_ms": 1000.0 * prof.step_seconds / prof.steps,
            "text": text}


def _warn_max_steps(max_steps: int | None, total: int, tc: TrainConfig) -> None:
    if max_steps is not None and max_steps > total:
        print(f"--max-steps {max_steps} is beyond the schedule's {total} steps "
              f"({'train.steps' if tc.steps is not None else 'train.epochs'}); the run stops at step {total} (to train "
              "longer, set a larger train.steps: a new schedule, so in a new --output-dir)", file=sys.stderr,
              flush=True)


def _finished(out: Path, max_steps: int | None, total: int | str | None) -> dict[str, Any] | None:
    """The stored summary of a run in ``out`` that already reached its stop step (``min(total, max_steps)``) and
    exported its encoder, else ``None``. ``total``: the schedule's length, ``"stored"`` to take the summary's (the
    config is unchanged), ``None`` if unknown (then ``None``)."""
    from largead.runfolder import SUMMARY_FILE

    try:
        done = json.loads((out / SUMMARY_FILE).read_text())
        steps = int(done["steps"])
        total = int(done["total_steps"]) if total == "stored" else total
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if total is None:
        return None
    done["total_steps"], done["finished"] = total, steps >= total
    stop = total if max_steps is None else min(total, max_steps)
    encoder = Path(done.get("encoder_dir", out / "encoder"))
    if steps < stop or not (encoder / "model.safetensors").is_file():
        return None
    return done


def _append(log: Any, record: dict[str, Any], out: Path, step: int) -> None:
    """One line of ``losses.jsonl``; a full or read-only disk is one line naming the intact checkpoint."""
    from largead.runfolder import run_write_error

    try:
        log.append(record)
    except OSError as err:
        raise run_write_error(err, log.path, f"step {step} of losses.jsonl", out) from err


def _export(encoder: Any, encoder_dir: Path, recipe: dict[str, Any], cfg: PretrainConfig, summary: dict[str, Any],
            out: Path) -> None:
    """The Hub-ready encoder folder (atomically), then ``summary.json`` (which marks the run as exported)."""
    from largead.fileio import atomic_directory, atomic_write_json
    from largead.runfolder import SUMMARY_FILE, RunWriteError, describe_write_error

    try:
        with atomic_directory(encoder_dir) as tmp:
            encoder.save_pretrained(tmp)
            _write_card(tmp, recipe, cfg)
        atomic_write_json(out / SUMMARY_FILE, summary)
    except (OSError, RuntimeError) as err:  # safetensors / torch writers wrap the OS error in a RuntimeError
        raise RunWriteError(describe_write_error(
            err, out, "the encoder", f"checkpoint-{summary['steps']} is intact: rerun the same command to export it"
        )) from err


def _print_summary(summary: dict[str, Any], out: Path, max_steps: int | None) -> None:
    loss = "n/a" if summary["final_loss"] is None else f"{summary['final_loss']:.4f}"
    head = (f"pretraining finished: {summary['steps']}/{summary['total_steps']} steps" if summary["finished"] else
            f"pretraining stopped at step {summary['steps']} of {summary['total_steps']} (--max-steps {max_steps}; "
            "rerun without it to continue)")
    print(f"{head}, final loss {loss}, {summary['seconds']:.1f} s; encoder: {summary['encoder_dir']}; "
          f"checkpoints: {out / 'checkpoints'}", flush=True)


def _superpixel_kind(sp: SuperpixelConfig) -> str:
    """The superpixels' real origin: a ``precomputed`` source names the kind of PNGs it reads."""
    return str(sp.options.get("kind", sp.source)) if sp.source == "precomputed" else sp.source


def _checksum(model: torch.nn.Module) -> float:
    """Sum of |w| over all parameters (float64): equal on every replica when DDP keeps them in sync."""
    import torch

    with torch.no_grad():
        return float(sum(p.detach().double().abs().sum() for p in model.parameters()))


def _write_card(folder: Path, recipe: dict[str, Any], cfg: PretrainConfig) -> None:
    """README.md model card (``largead.cards.write_card``): the zoo entry's card when the config names one, else a
    card for ``your-org/largead-<config name>`` (``scripts/push_to_hub.py`` writes the real repo id in). A run with
    a random-init teacher is never labelled as its zoo entry, and its card says so first."""
    from largead.cards import write_card

    random_teacher = cfg.teacher.random_init
    zoo_name = None if random_teacher else cfg.zoo_name
    notice = ("Trained with a randomly initialised 2D teacher (`teacher.random_init: true`, a dry run): these "
              "weights distil nothing and are not a zoo checkpoint." if random_teacher else None)
    write_card(folder, recipe, name=zoo_name, repo_id=None if zoo_name else f"your-org/largead-{cfg.name}",
               notice=notice)


def cli(argv: Sequence[str] | None = None) -> None:
    """``training/pretrain.py`` / ``python -m largead.training.pretrain``: errors are one line (see
    :func:`largead.training.run_cli`)."""
    from largead.training import run_cli

    run_cli("pretrain.py", lambda: main(parse_args(argv)))


if __name__ == "__main__":
    cli()
