"""Evaluate a segmentation model (from ``finetune.py``) per point: mIoU (both conventions), accuracy, robustness.

    python training/evaluate.py --model runs/ft/model --dataset nuscenes --root /data/nuscenes --split val
    accelerate launch --multi_gpu --num_processes 2 training/evaluate.py --model runs/lp/model --dataset synthetic \\
        --option num_sequences=2 --corruptions all

Every point is predicted: voxel logits are mapped back to points through the voxeliser's inverse indices. Frames
are split between processes with an explicit contiguous partition (no padding, no frame counted twice), the
per-process confusion matrices are summed, so any number of processes gives exactly the single-process numbers.

Writes a results JSON (default ``<model>/eval/<dataset>-<split>.json``: per-class IoU, ``miou`` (standard, classes
with an empty union excluded), ``miou_slidr`` (empty union counts 1.0), accuracy, dataset, split, label fraction)
and merges the numbers into the model folder's card (``README.md``: ``model-index`` and its *Evaluation* section) so
``push_to_hub`` publishes them. An evaluation of part of a split (``--max-frames``) is marked ``"partial": true`` in
the JSON and never written into the card.

Robustness (``--corruptions all`` or a comma list): each frame is corrupted on the fly with
:func:`largead.data.corruptions.corrupt` at the three severities (seed ``--corruption-seed + frame index``), giving
mIoU per (corruption, severity), then RR per corruption and mRR, and CE / mCE against a baseline (``--baseline``: a
results JSON of the baseline model written by this script with the same corruptions, or a built-in table name from
:data:`largead.evaluation.robustness.BASELINES`; by default the dataset's built-in baseline where one exists, see
that module). The on-the-fly corruptions are simplified Robo3D models (see ``largead.data.corruptions``), so CE
against a table measured on Robo3D's released data is indicative only; compare models evaluated the same way.
To evaluate on the released nuScenes-C / SemanticKITTI-C files instead (the data Robo3D's baseline tables were
measured on), add ``--corrupted-root <nuScenes-C or SemanticKITTI-C folder>``: every (corruption, severity) is then
read by the ``nuscenes_c`` / ``semantickitti_c`` reader (``--root`` stays the clean dataset: nuScenes-C indexes its
sweeps through the original tables); the results say which (``robustness.corruption_source``). One corruption of the
released files can also be evaluated alone as a dataset (``--dataset nuscenes_c --option corruption=fog ...``).

Reader options: ``--option`` values, on top of the options the model was trained with (``dataset_options`` in its
``segmentation.json``, e.g. Waymo's ``labelled_only``) when the evaluated dataset is the one it was trained on.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from largead.evaluation.metrics import ConfusionMatrix, frame_partition
from largead.training import parse_cli


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="evaluate.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="segmentation model folder (finetune.py's output_dir/model)")
    p.add_argument("--dataset", default=None, help="registered dataset (default: the one the model was trained on)")
    p.add_argument("--root", default=None, help="dataset root")
    p.add_argument("--split", default="val")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="reader option (value parsed as YAML), e.g. num_sequences=2; repeatable")
    p.add_argument("--batch-size", type=int, default=1, help="frames per forward pass")
    p.add_argument("--max-frames", type=int, default=None,
                   help="evaluate only the first N frames (smoke tests; marked partial, never written to the card)")
    p.add_argument("--output", default=None, help="results JSON path")
    p.add_argument("--corruptions", default="none", help="'none', 'all', or a comma list of corruption names")
    p.add_argument("--corruption-seed", type=int, default=0)
    p.add_argument("--corrupted-root", default=None,
                   help="with --corruptions: read the released Robo3D copy (nuScenes-C / SemanticKITTI-C folder) "
                        "instead of corrupting on the fly")
    p.add_argument("--baseline", default=None, help="baseline results JSON or built-in table name (for mCE)")
    p.add_argument("--no-card", action="store_true", help="do not update the model card")
    p.add_argument("--cpu", action="store_true")
    return parse_cli(p, argv)


def _corruption_list(spec: str) -> list[str]:
    from largead.evaluation.robustness import CORRUPTIONS

    if spec in ("", "none"):
        return []
    if spec == "all":
        return list(CORRUPTIONS)
    names = [s.strip() for s in spec.split(",") if s.strip()]
    bad = [n for n in names if n not in CORRUPTIONS]
    if bad:
        raise ValueError(f"--corruptions: unknown {bad}; choose from {CORRUPTIONS} or 'all'")
    return names


@torch.no_grad()
def confusion_on_frames(model: Any, dataset: Any, indices: np.ndarray, norm_key: str | None, batch_size: int = 1,
                        transforms: Sequence[Any] = (None,),
                        device: torch.device | str = "cpu") -> list[ConfusionMatrix]:
    """Per-point confusion matrices of ``model`` (a SegmentationModel in eval mode) over ``dataset[indices]``, one per
    entry of ``transforms``.

    ``norm_key`` selects the encoder's input normalisation; each ``transform(frame, index) -> frame`` (or ``None``
    for the clean frame) is applied to every frame. Each frame is read once and run through every variant, so a
    robustness pass (clean + 8 corruptions x 3 severities) reads the data once, not 25 times. Frames without labels
    raise.
    """
    cms = [ConfusionMatrix(model.num_classes, class_names=model.class_names) for _ in transforms]
    for start in range(0, len(indices), batch_size):
        chunk = [int(i) for i in indices[start:start + batch_size]]
        frames = [dataset[i] for i in chunk]
        for i, f in zip(chunk, frames):
            if f.labels is None:
                raise ValueError(f"{dataset.name}: frame {i} ({f.token}) has no labels to evaluate against")
        for cm, transform in zip(cms, transforms):
            variant = frames if transform is None else [transform(f, i) for i, f in zip(chunk, frames)]
            batch = model.encoder.voxelize([f.points[:, :4] for f in variant], dataset=norm_key).to(device)
            pred = model.point_logits(batch).argmax(dim=1)
            cm.update(pred, torch.from_numpy(np.concatenate([f.labels for f in variant])).to(pred.device))
    return cms


CORRUPTED_READERS = {"nuscenes": "nuscenes_c", "semantickitti": "semantickitti_c"}
"""Dataset -> the reader of its released Robo3D copy (``--corrupted-root``)."""


def corrupted_dataset(dataset_name: str, dataset: Any, corrupted_root: str, split: str, corruption: str,
                      severity: str) -> Any:
    """The released corrupted copy of ``dataset`` (``split``) for one ``corruption`` x ``severity``, read by
    :data:`CORRUPTED_READERS`' reader; its frames must correspond to ``dataset``'s one to one (same count)."""
    from largead.data.registry import get_dataset

    reader = CORRUPTED_READERS.get(dataset_name)
    if reader is None:
        raise ValueError(f"--corrupted-root: no released corrupted copy of {dataset_name!r} is known; Robo3D "
                         f"publishes {sorted(CORRUPTED_READERS.values())}")
    opts: dict[str, Any] = {"corruption": corruption, "severity": severity}
    if reader == "nuscenes_c":  # over the original tables, shared with the clean dataset
        opts.update(nusc=dataset.nusc, version=dataset.version)
    out = get_dataset(reader, corrupted_root, split, **opts)
    if len(out) != len(dataset):
        raise ValueError(f"--corrupted-root {corrupted_root}: {corruption}/{severity} has {len(out)} frames for split "
                         f"{split!r} but {dataset_name} has {len(dataset)}; point it at the copy of this split")
    return out


def _load_baseline(spec: str | None, dataset: str) -> tuple[dict | None, str | None]:
    from largead.evaluation.robustness import BASELINES, DEFAULT_BASELINE

    if spec is None:
        name = DEFAULT_BASELINE.get(dataset)
        return (BASELINES[name], name) if name else (None, None)
    if spec in BASELINES:
        return BASELINES[spec], spec
    path = Path(spec)
    if not path.is_file():
        raise FileNotFoundError(f"--baseline {spec!r} is neither a file nor a built-in table ({sorted(BASELINES)})")
    data = json.loads(path.read_text())
    table = data.get("corruption_miou")
    if not isinstance(table, dict):
        raise ValueError(f"{path}: no 'corruption_miou' table; evaluate the baseline with --corruptions all first")
    return table, str(path)


def main(args: argparse.Namespace) -> dict[str, Any]:
    """Evaluate; returns the results dict (also written to JSON by the main process)."""
    from accelerate import Accelerator

    from largead.cards import update_card_results
    from largead.config import parse_overrides
    from largead.data.registry import get_dataset
    from largead.evaluation.report import write_results
    from largead.models.heads import SEGMENTATION_FILE, SegmentationModel

    corruptions = _corruption_list(args.corruptions)  # validate arguments before any work
    folder = Path(args.model)
    model = SegmentationModel.from_pretrained(folder)
    meta = json.loads((folder / SEGMENTATION_FILE).read_text())
    dataset_name = args.dataset or meta.get("dataset")
    if not dataset_name:
        raise ValueError(f"{folder}: no dataset recorded in {SEGMENTATION_FILE}; pass --dataset")
    options = parse_overrides(args.option, "--option")
    if dataset_name == meta.get("dataset"):  # the reader options the model was trained with, then --option
        options = {**(meta.get("dataset_options") or {}), **options}
    if args.corrupted_root and not corruptions:
        raise ValueError("--corrupted-root needs --corruptions (all, or a comma list)")
    dataset = get_dataset(dataset_name, args.root, args.split, **options)
    if model.class_names and tuple(dataset.class_names) != tuple(model.class_names):
        raise ValueError(f"model {folder} predicts classes {list(model.class_names)} but {dataset_name} has "
                         f"{list(dataset.class_names)}")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    n = len(dataset) if args.max_frames is None else min(len(dataset), args.max_frames)
    if n == 0:
        raise ValueError(f"{dataset_name} split {args.split!r} has no frames to evaluate")
    if model.class_names is None:
        model.class_names = tuple(dataset.class_names)

    acc = Accelerator(cpu=args.cpu)
    model.to(acc.device).eval()
    indices = frame_partition(n, acc.num_processes, acc.process_index)

    # the input normalisation the model was trained with, when evaluated on its own dataset
    norm_key = (meta.get("input_norm_key") or dataset_name) if dataset_name == meta.get("dataset") else dataset_name

    variants: list[tuple[str, str] | None] = [None]
    if corruptions:
        from largead.data.corruptions import corrupt
        from largead.evaluation.robustness import SEVERITIES, robustness_summary

        variants += [(c, s) for c in corruptions for s in SEVERITIES]
    if args.corrupted_root:  # the released files: one dataset per variant, read frame by frame
        cms = confusion_on_frames(model, dataset, indices, norm_key, args.batch_size, [None], acc.device)
        for c, s in variants[1:]:
            cds = corrupted_dataset(dataset_name, dataset, args.corrupted_root, args.split, c, s)
            cms += confusion_on_frames(model, cds, indices, norm_key, args.batch_size, [None], acc.device)
    else:
        transforms = [None if v is None else
                      (lambda f, i, c=v[0], s=v[1]: corrupt(f, c, s, seed=args.corruption_seed + i)) for v in variants]
        cms = confusion_on_frames(model, dataset, indices, norm_key, args.batch_size, transforms, acc.device)
    scores = [cm.reduce(acc).compute() for cm in cms]

    clean = scores[0]
    results: dict[str, Any] = {
        "model": str(folder), "dataset": dataset_name, "split": args.split, "num_frames": n,
        "partial": n < len(dataset), "split_frames": len(dataset),
        "mode": meta.get("mode"), "label_fraction": meta.get("label_fraction"),
        **{k: clean[k] for k in ("miou", "miou_slidr", "accuracy", "iou_per_class", "num_points")},
        "confusion_matrix": clean["confusion_matrix"],
    }
    if corruptions:
        table: dict[str, dict[str, float]] = {c: {} for c in corruptions}
        for (c, s), score in zip(variants[1:], scores[1:]):
            table[c][s] = score["miou"]
        baseline, baseline_name = _load_baseline(args.baseline, dataset_name)
        summary = robustness_summary(table, clean["miou"], baseline)
        results["corruption_miou"] = table
        source = (f"released files ({args.corrupted_root})" if args.corrupted_root
                  else "on the fly (largead.data.corruptions)")
        results["robustness"] = {**summary, "baseline": baseline_name, "corruption_dataset": f"{dataset_name}-c",
                                 "corruption_source": source}

    if acc.is_main_process:
        out = Path(args.output) if args.output else folder / "eval" / f"{dataset_name}-{args.split}.json"
        write_results(out, results)
        if results["partial"] and not args.no_card:  # a number on part of a split is never published as a result
            print(f"evaluate.py: {n} of {len(dataset)} frames evaluated (--max-frames): the results are written to "
                  f"{out} marked partial, not into the model card", file=sys.stderr)
        elif not args.no_card:
            update_card_results(folder, results)
    acc.wait_for_everyone()
    return results


def cli(argv: Sequence[str] | None = None) -> None:
    """``training/evaluate.py`` / ``python -m largead.training.evaluate``: prints the headline numbers; errors are
    one line."""
    from largead.training import run_cli

    def run() -> None:
        res = main(parse_args(argv))
        print(json.dumps({k: res[k] for k in ("dataset", "split", "miou", "miou_slidr", "accuracy")}, indent=2))

    run_cli("evaluate.py", run)


if __name__ == "__main__":
    cli()
