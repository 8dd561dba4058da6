"""The accelerate training loop's parts, shared by pretraining and fine-tuning (:mod:`largead.training`).

Everything a diffusers-style training script needs beyond the model, the loss and its configuration (which is
:mod:`largead.config`):

Accelerator and run folder
    :func:`make_accelerator` builds an :class:`accelerate.Accelerator` with a :class:`ProjectConfiguration` rooted at
    ``output_dir`` (logs under ``output_dir/logs``), a seeded data-loader configuration and per-process seeding; it
    writes nothing. :class:`RunFolder` wraps a run: the main process locks ``output_dir`` (a second run on it is
    refused naming the holder; a holder that died is reported), removes an interrupted run's temporaries, and, if the
    run fails before :meth:`RunFolder.commit` (called once the first step succeeded), removes what the run created,
    so a failed start never blocks the corrected rerun.

Checkpoints (files and checks in :mod:`largead.runfolder`)
    :func:`save_checkpoint` writes ``output_dir/checkpoints/checkpoint-{step}`` atomically (every process writes into
    a temporary folder; registered custom objects such as the scheduler go to JSON, never to a pickle; the main
    process writes a manifest of sizes and SHA-256 last, after flushing the files to disk, and renames the folder).
    It checks the free space against the previous checkpoint first, and a failed write (full or read-only disk) is
    one line (:class:`CheckpointWriteError`) with the partial folder removed. While a run is live at least two
    checkpoints are kept (:func:`live_limit`); :func:`finalize_checkpoints` applies ``total_limit`` when it ends. It
    refuses to save a model with non-finite weights. :func:`resume` loads ``"latest"`` (the newest checkpoint that
    verifies, reporting each damaged one in one line) or a given folder, refuses pickles that are not plain tensor
    data, reports a missing RNG state, and returns the optimiser step to continue from.
    (:func:`largead.config.check_run_config` refuses a resumed run whose config differs.)

Data order
    :func:`make_dataloader` + ``accelerator.prepare`` give each process a disjoint shard of a permutation that
    depends only on ``(seed, epoch)``; :func:`resume_position` + :func:`epoch_batches` continue a resumed run at the
    exact next micro-batch (``accelerator.skip_first_batches``). :func:`sample_rng` gives a per-sample random
    generator from ``(seed, epoch, index)`` so augmentations do not depend on the process or worker layout.

Optimisation
    :func:`build_optimizer` (SGD as in SLidR, AdamW as in SuperFlow; learning rate scaled linearly with the global
    batch), :func:`build_scheduler` (cosine, one-cycle, constant), :func:`check_finite_loss` (stops every process with
    :class:`NonFiniteLossError`), :func:`divergence` (a loss that ends far above its start), :func:`progress_bar`
    (tqdm on the local main process only), :func:`finish` (end trackers, reset accelerate's process-wide state so
    another run can start in the same process). Final exports go through :func:`largead.fileio.atomic_directory`.

Typical loop (see :mod:`largead.training.pretrain`)::

    acc = make_accelerator(out, mixed_precision="no", grad_accum=2, seed=0)
    with RunFolder(acc, out) as run:
        model, opt, dl = acc.prepare(model, build_optimizer(model.parameters(), ocfg, global_batch), dl)
        sched = build_scheduler(opt, ocfg, total_steps)          # stepped by hand, once per optimiser step
        acc.register_for_checkpointing(sched)
        step = resume(acc, out, "latest")
        log = LossLog(out / "losses.jsonl", step, write=acc.is_main_process)
        epoch, skip = resume_position(step, len(dl), acc.gradient_accumulation_steps)
        while step < max_steps:
            for batch in epoch_batches(acc, dl, epoch, skip):
                with acc.accumulate(model):
                    loss = ...; check_finite_loss(acc, loss, step); acc.backward(loss); opt.step(); opt.zero_grad()
                if acc.sync_gradients:
                    sched.step(); step += 1
                    if not run.committed: ...write run_config.json...; run.commit()
                    log.append({"step": step, "loss": ...})
                    if step % every == 0: save_checkpoint(acc, out, step, total_limit)
            epoch, skip = epoch + 1, 0
        ...export...; finalize_checkpoints(acc, out, total_limit, finished=True)
        finish(acc)
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import shutil
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

from largead.runfolder import (
    CHECKPOINT_DIR,
    CHECKPOINT_PREFIX,
    CUSTOM_STATE,
    LOCK_FILE,
    OLD_PREFIX,
    TMP_PREFIX,
    CheckpointError,
    CheckpointWriteError,
    LossLog,
    RunLock,
    RunLockedError,
    RunWriteError,
    checkpoint_size,
    checkpoint_step,
    describe_holder,
    describe_write_error,
    fsync_path,
    list_checkpoints,
    note,
    prune_checkpoints,
    remove_stale_temporaries,
    verify_checkpoint,
    write_manifest,
)

if TYPE_CHECKING:
    from accelerate import Accelerator

MIN_LIVE_CHECKPOINTS = 2


class NonFiniteLossError(FloatingPointError):
    """The loss (or the model's weights) became NaN or infinite; training stops without saving that state."""


class TrainingDivergedError(FloatingPointError):
    """The loss grew far above where it started (see :func:`divergence`); the run's result is not written."""


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
    out = Path(output_dir)  # created by RunFolder (or the first checkpoint), not here
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


# ------------------------------------------------------------------------------------------------------ run folder


def _broadcast_error(accelerator: Accelerator, error: BaseException | None, what: str) -> BaseException | None:
    """The main process's error (or ``None``) on every process: the others get a RuntimeError with its message, so
    no process waits forever for one that gave up."""
    if accelerator.num_processes == 1:
        return error
    from accelerate.utils import broadcast_object_list

    box = [None if error is None else f"{type(error).__name__}: {error}"]
    broadcast_object_list(box, from_process=0)
    if accelerator.is_main_process or box[0] is None:
        return error
    return RuntimeError(f"{what} failed on the main process: {box[0]}")


def _any_error(accelerator: Accelerator, error: BaseException | None, what: str) -> BaseException | None:
    """``error`` if this process failed, else a RuntimeError if another one did (every process must call it)."""
    if accelerator.num_processes == 1:
        return error
    flag = torch.tensor([0.0 if error is None else 1.0], device=accelerator.device)
    if float(accelerator.reduce(flag, reduction="sum").item()) == 0:
        return None
    return error or RuntimeError(f"{what} failed on another process")


def _reset_accelerate_state() -> None:
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()


class RunFolder:
    """The output folder of one run, as a context manager around the training code (every process enters it).

    On entry the main process creates the folder if needed, takes its :class:`~largead.runfolder.RunLock` (a second
    run on the folder is refused with :class:`~largead.runfolder.RunLockedError` naming the holder; a lock file left
    by a holder that died is reported), and removes the temporaries an interrupted run left behind (reported). Call
    :meth:`commit` once the first optimiser step has succeeded, before writing anything (``run_config.json``, logs,
    checkpoints): if the block fails before that, the main process removes every top-level entry the run created in
    the folder (``segment_cache/`` written while loading the first batch, or the folder itself), so a failed start
    never blocks its corrected rerun. On exit the lock is released (the OS releases it if the process is killed).
    A single-process run that fails also resets accelerate's process-wide state, so the same Python process can start
    another run.
    """

    def __init__(self, accelerator: Accelerator, output_dir: str | os.PathLike) -> None:
        self.output_dir = Path(output_dir)
        self.committed = False
        self._acc = accelerator
        self._main = accelerator.is_main_process
        self._single = accelerator.num_processes == 1
        self._lock: RunLock | None = None
        self._created = False
        self._before: set[str] = set()

    def __enter__(self) -> RunFolder:
        error = None
        if self._main:
            out = self.output_dir
            try:
                self._created = not out.exists()
                self._before = set() if self._created or not out.is_dir() else set(os.listdir(out))
                try:
                    self._lock = RunLock.acquire(out)
                except OSError as err:
                    if isinstance(err, (FileNotFoundError, NotADirectoryError)) or not err.errno:
                        raise
                    raise RunWriteError(describe_write_error(err, out, "its lock file", "nothing was written")) from err
                if self._lock.previous:
                    note(f"{out}: the previous run ({describe_holder(self._lock.previous)}) ended without releasing "
                         "its lock (killed or crashed); taking over")
                removed = remove_stale_temporaries(out)
                if removed:
                    size = sum(b for _, b in removed) / 1e6
                    note(f"{out}: removed {len(removed)} temporary file(s) of an interrupted run ({size:.0f} MB): "
                         f"{', '.join(str(p.relative_to(out)) for p, _ in removed[:5])}")
            except BaseException as err:
                if self._lock is not None:
                    self._lock.release()
                    self._lock = None
                error = err
        error = _broadcast_error(self._acc, error, f"locking {self.output_dir}")
        if error is not None:
            if self._single:
                _reset_accelerate_state()
            raise error
        return self

    def commit(self) -> None:
        """The run's first step succeeded: from now on its outputs stay, whatever happens."""
        self.committed = True

    def _rollback(self) -> None:
        out = self.output_dir
        if not out.is_dir():
            return
        new = sorted(n for n in os.listdir(out) if n not in self._before and n != LOCK_FILE)
        for name in new:
            p = out / name
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() and not p.is_symlink() else p.unlink(missing_ok=True)
        if new and not self._created:
            note(f"{out}: removed what this run wrote before its first step ({', '.join(new)}), so a corrected rerun "
                 "starts clean")

    def __exit__(self, exc_type, exc, tb) -> bool:
        if self._main and self._lock is not None:
            try:
                if exc_type is not None and not self.committed:
                    self._rollback()
            finally:
                self._lock.release()
                self._lock = None
                if exc_type is not None and not self.committed and self._created:
                    with contextlib.suppress(OSError):
                        self.output_dir.rmdir()
        if exc_type is not None and self._single:
            _reset_accelerate_state()
        return False


# ------------------------------------------------------------------------------------------------------ checkpoints


def _params_finite(models: Sequence[torch.nn.Module]) -> list[str]:
    bad = []
    for m in models:
        for name, t in list(m.named_parameters()) + list(m.named_buffers()):
            if t.is_floating_point() and not torch.isfinite(t).all():
                bad.append(name)
    return bad


def live_limit(total_limit: int | None) -> int | None:
    """Checkpoints kept while a run is live: ``total_limit`` raised to :data:`MIN_LIVE_CHECKPOINTS` (so a damaged
    newest checkpoint always has an intact predecessor); ``None`` keeps all."""
    if total_limit is None:
        return None
    return max(int(total_limit), MIN_LIVE_CHECKPOINTS)


def _human(n: float) -> str:
    for unit in ("bytes", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"  # pragma: no cover


def _intact(previous: Path | None) -> str:
    return f"the previous checkpoint {previous.name} is intact" if previous else "no checkpoint was saved before it"


def save_checkpoint(accelerator: Accelerator, output_dir: str | os.PathLike, step: int,
                    total_limit: int | None = None) -> Path:
    """Save the full training state (models, optimisers, RNGs, registered objects) as
    ``output_dir/checkpoints/checkpoint-{step}``; every process must call it.

    - Refuses (saving nothing, :class:`NonFiniteLossError`) a model with NaN/inf weights.
    - Checks first that the file system has as much free space as the previous checkpoint took.
    - Writes into ``.tmp-checkpoint-{step}``; custom objects registered with ``accelerator.register_for_checkpointing``
      (the scheduler) are saved as ``custom_state_{i}.json``, never pickled; then the main process writes
      ``manifest.json`` (sizes + SHA-256, after flushing every file to disk) and renames the folder into place.
    - A failed write (disk full, read-only folder) removes the partial folder and raises
      :class:`CheckpointWriteError`: ``no space left on <path> while writing checkpoint N; the previous checkpoint
      checkpoint-M is intact``.
    - Then removes checkpoints after ``step`` (left from before a resume from an earlier one) and keeps the newest
      :func:`live_limit` ``(total_limit)`` (at least two; :func:`finalize_checkpoints` applies ``total_limit`` itself
      when the run ends).
    """
    bad = _params_finite(accelerator._models)
    flag = torch.tensor([float(len(bad))], device=accelerator.device)
    if float(accelerator.reduce(flag, reduction="sum").item()) > 0:
        raise NonFiniteLossError(f"refusing to save checkpoint-{step}: non-finite weights in "
                                 f"{bad[:5] or 'another process'}")
    out = Path(output_dir)
    root = out / CHECKPOINT_DIR
    final = root / f"{CHECKPOINT_PREFIX}{step}"
    tmp = root / f"{TMP_PREFIX}{step}"
    previous = next((p for s, p in reversed(list_checkpoints(out)) if s < step), None)
    what = f"checkpoint {step}"

    def failed(error: BaseException) -> CheckpointWriteError:
        if accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
        return CheckpointWriteError(describe_write_error(error, root, what, _intact(previous)))

    error: BaseException | None = None
    if accelerator.is_main_process:
        try:
            root.mkdir(parents=True, exist_ok=True)
            if tmp.exists():
                shutil.rmtree(tmp)
            if previous is not None:
                need, free = checkpoint_size(previous), shutil.disk_usage(root).free
                if free < need:
                    raise CheckpointWriteError(
                        f"no space left on {root} for checkpoint {step}: the previous one took {_human(need)}, "
                        f"{_human(free)} are free; {_intact(previous)}")
            tmp.mkdir()
        except Exception as err:  # noqa: BLE001 - reported on every process below
            error = err
    error = _any_error(accelerator, error, f"preparing {what}")
    if isinstance(error, CheckpointWriteError):
        raise error
    if error is not None:
        raise failed(error) from error

    customs = accelerator._custom_objects
    accelerator._custom_objects = []  # accelerate would pickle them (and unpickle with weights_only=False on load)
    try:
        accelerator.save_state(str(tmp))
        if accelerator.is_main_process:
            from largead.fileio import atomic_write_json

            for i, obj in enumerate(customs):
                atomic_write_json(tmp / CUSTOM_STATE.format(i), _json_state(obj, i), sort_keys=True)
    except Exception as err:  # noqa: BLE001
        error = err
    finally:
        accelerator._custom_objects = customs
    error = _any_error(accelerator, error, f"writing {what}")
    if error is not None:
        raise failed(error) from error

    if accelerator.is_main_process:
        try:
            write_manifest(tmp, step, accelerator.num_processes)
            aside = root / f"{OLD_PREFIX}{step}"
            if final.exists():  # saved again after resuming from an earlier checkpoint
                os.replace(final, aside)
            os.replace(tmp, final)
            fsync_path(root)
            if aside.exists():
                shutil.rmtree(aside)
            prune_checkpoints(out, live_limit(total_limit), current_step=step)
        except Exception as err:  # noqa: BLE001
            error = err
    error = _any_error(accelerator, error, f"writing {what}")
    if error is not None:
        raise failed(error) from error
    return final


def _json_state(obj: Any, index: int) -> dict[str, Any]:
    state = obj.state_dict()
    try:
        return json.loads(json.dumps(state))
    except (TypeError, ValueError) as err:
        raise TypeError(f"the state of registered object {index} ({type(obj).__name__}) is not JSON data ({err}); "
                        "largead saves custom state as JSON, never as a pickle") from None


def finalize_checkpoints(accelerator: Accelerator, output_dir: str | os.PathLike, total_limit: int | None,
                         finished: bool = False) -> None:
    """At the end of a run (after its result was exported): keep the newest ``total_limit`` checkpoints. ``None``
    keeps all; 0 removes them all once the run has ``finished`` its schedule (the exported model is the result; the
    run can no longer be extended), and keeps the final one of a run stopped early (``--max-steps``), so it can
    continue."""
    if accelerator.is_main_process and total_limit is not None:
        keep = int(total_limit) if total_limit >= 1 else (0 if finished else 1)
        prune_checkpoints(output_dir, keep)
    accelerator.wait_for_everyone()


def _choose_checkpoint(output_dir: Path, spec: str) -> tuple[int, Path, dict[str, Any]] | None:
    """``(step, folder, manifest)`` of the checkpoint to resume from (see :func:`resume`), or ``None``."""
    if spec == "latest":
        ckpts = list_checkpoints(output_dir)
        failures = []
        for i, (step, path) in enumerate(reversed(ckpts)):
            try:
                manifest = verify_checkpoint(path)
            except CheckpointError as err:
                nxt = ckpts[len(ckpts) - 2 - i][1].name if i + 1 < len(ckpts) else None
                note(f"{path} is unusable: {err}; " + (f"falling back to {nxt}" if nxt else "no older checkpoint"))
                failures.append(f"{path.name} ({err})")
                continue
            return step, path, manifest
        if failures:
            raise CheckpointError(f"no checkpoint in {output_dir / CHECKPOINT_DIR} can be resumed from: "
                                  f"{'; '.join(failures)}. Resume from another copy, or start afresh in a new "
                                  "--output-dir")
        return None
    path = Path(spec)
    if not path.is_dir():
        path = output_dir / CHECKPOINT_DIR / spec
    step = checkpoint_step(path)
    if not path.is_dir() or step is None:
        raise FileNotFoundError(f"checkpoint {spec!r} not found (expected a folder named "
                                f"{CHECKPOINT_PREFIX}<step>, looked in {path})")
    try:
        manifest = verify_checkpoint(path)
    except CheckpointError as err:
        raise CheckpointError(f"cannot resume from {path}: {err}") from None
    return step, path, manifest


def resume(accelerator: Accelerator, output_dir: str | os.PathLike,
           resume_from_checkpoint: str | None = "latest") -> int:
    """Load a checkpoint into the prepared objects and return the optimiser step to continue from.

    ``resume_from_checkpoint``: ``None`` -> 0 (fresh run); ``"latest"`` -> the newest ``checkpoint-{step}`` under
    ``output_dir/checkpoints`` that passes :func:`~largead.runfolder.verify_checkpoint` (each newer one that fails
    is reported in one line, e.g. ``checkpoint-4 is unusable: model.safetensors has 1024 bytes, the manifest says
    46895316 (truncated); falling back to checkpoint-3``), 0 if there is none, :class:`CheckpointError` if there are
    some but none verifies; otherwise a checkpoint folder (absolute, or a name under ``output_dir/checkpoints``),
    which must exist and verify.

    The main process chooses and verifies (so a poisoned pickle is refused before anything is loaded); every process
    then loads the same folder. A process whose RNG state is missing from the checkpoint (resumed with more processes
    than saved it) says so: its random streams restart from the seed and the run is not bit-identical.
    """
    if resume_from_checkpoint is None:
        return 0
    out = Path(output_dir)
    choice, error = None, None
    if accelerator.is_main_process:
        try:
            chosen = _choose_checkpoint(out, str(resume_from_checkpoint))
            choice = None if chosen is None else (chosen[0], str(chosen[1]), int(chosen[2].get("processes", 1)))
        except Exception as err:  # noqa: BLE001 - raised on every process below
            error = err
    error = _broadcast_error(accelerator, error, "choosing the checkpoint to resume from")
    if error is not None:
        raise error
    if accelerator.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        box = [choice]
        broadcast_object_list(box, from_process=0)
        choice = box[0]
    if choice is None:
        return 0
    step, folder, saved_by = choice
    path = Path(folder)
    rng = path / f"random_states_{accelerator.process_index}.pkl"
    if not rng.is_file():
        print(f"{path.name} has no RNG state for process {accelerator.process_index} (saved by {saved_by} "
              "process(es)): its random streams restart from the seed, so this run is not bit-identical to an "
              "uninterrupted one", file=sys.stderr, flush=True)
    customs = accelerator._custom_objects
    states = sorted(path.glob("custom_state_*.json"))
    if len(states) != len(customs):
        raise CheckpointError(f"{path} holds {len(states)} custom state file(s) but {len(customs)} object(s) are "
                              "registered for checkpointing (a checkpoint of another training script?)")
    accelerator._custom_objects = []  # loaded from JSON below, never unpickled
    try:
        accelerator.load_state(str(path))
    finally:
        accelerator._custom_objects = customs
    for i, obj in enumerate(customs):
        file = path / CUSTOM_STATE.format(i)
        try:
            obj.load_state_dict(json.loads(file.read_text()))
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise CheckpointError(f"{file}: cannot restore {type(obj).__name__} ({err})") from None
    if accelerator.is_main_process:
        note(f"resuming from {path} (step {step})")
    return step


# --------------------------------------------------------------------------------------------------------- data order


def make_dataloader(dataset: torch.utils.data.Dataset, batch_size: int, collate_fn: Callable | None = None,
                    seed: int = 0, shuffle: bool = True, num_workers: int = 0, drop_last: bool = True,
                    sampler: torch.utils.data.Sampler | None = None) -> torch.utils.data.DataLoader:
    """A DataLoader whose order depends only on ``seed`` (and the epoch, once prepared by an accelerator from
    :func:`make_accelerator`, which shards it so processes see disjoint samples). ``batch_size`` is per process.
    A custom ``sampler`` (e.g. :class:`largead.pretrain.multisource.MultiSourceSampler`) must itself be
    deterministic in its seed and ``set_epoch``.

    With ``num_workers > 0`` the workers load, augment and collate the next batches (``prefetch_factor`` 2 each,
    torch's default) while the main process computes; on a CUDA machine batches are pinned (``pin_memory``: tensors and
    containers of tensors, see ``torch.utils.data``) for faster host-to-device copies. Workers are *not* persistent:
    they are started again every epoch so that they see the dataset's ``set_epoch`` (the per-sample augmentation seed
    of :func:`sample_rng`), which persistent workers, holding their own copy of the dataset, would miss."""
    if sampler is None and shuffle:
        sampler = torch.utils.data.RandomSampler(dataset, generator=torch.Generator().manual_seed(int(seed)))
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, sampler=sampler, collate_fn=collate_fn,
                                       num_workers=num_workers, drop_last=drop_last,
                                       pin_memory=torch.cuda.is_available())


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


def divergence(losses: Sequence[float], factor: float | None = 10.0) -> str | None:
    """Why a run whose per-step losses are ``losses`` diverged, or ``None``: the mean loss of its last fifth of the
    steps (at least one) exceeds ``factor`` x the loss of its first step (``factor`` ``None`` or <= 0: never). Needs two
    steps or more. E.g. a linear probe on a 4-step encoder went 4954 -> 2.75e6: diverged, where a healthy run's loss
    falls or stays within a few times its start."""
    if not factor or factor <= 0 or len(losses) < 2:
        return None
    first = float(losses[0])
    tail = [float(v) for v in losses[-max(1, len(losses) // 5):]]
    last = sum(tail) / len(tail)
    if not math.isfinite(last) or (first > 0 and last > factor * first):
        return (f"the loss went from {first:.4g} at step 1 to {last:.4g} (mean of the last {len(tail)} step(s)), "
                f"more than {factor:g}x where it started")
    return None


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
    "MIN_LIVE_CHECKPOINTS",
    "SLIDR_SGD",
    "SUPERFLOW_ADAMW",
    "CheckpointError",
    "CheckpointWriteError",
    "LossLog",
    "NonFiniteLossError",
    "OptimizerConfig",
    "RunFolder",
    "RunLockedError",
    "RunWriteError",
    "TrainingDivergedError",
    "build_optimizer",
    "build_scheduler",
    "check_finite_loss",
    "divergence",
    "epoch_batches",
    "finalize_checkpoints",
    "finish",
    "list_checkpoints",
    "live_limit",
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
    "verify_checkpoint",
]
