"""Evaluation results -> JSON file and Hugging Face model-card metadata (``model-index``).

:func:`update_model_card` adds (or replaces) ``EvalResult`` entries in the ``README.md`` of a checkpoint folder so
that ``push_to_hub`` publishes them; a minimal card is created when the folder has none. Results of the same
(task, dataset, split, metric, setting) replace the previous entry instead of piling up. mIoU is published in
percent, like the papers (the results JSON keeps fractions).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from largead import PAPER_URL
from largead.fileio import atomic_write_text

__all__ = ["eval_results", "update_model_card", "write_results"]

TASK_TYPE = "semantic-segmentation"


def write_results(path: str | os.PathLike, results: Mapping[str, Any]) -> Path:
    """Write ``results`` as indented JSON, atomically (NaN written as ``null``)."""

    def clean(v: Any) -> Any:
        if isinstance(v, float) and math.isnan(v):
            return None
        if isinstance(v, Mapping):
            return {str(k): clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v

    path = Path(path)
    atomic_write_text(path, json.dumps(clean(results), indent=2, allow_nan=False) + "\n")
    return path


def _setting(results: Mapping[str, Any]) -> str:
    mode = str(results.get("mode", "evaluation")).replace("_", " ")
    frac = results.get("label_fraction")
    parts = [f"LiDAR semantic segmentation ({mode}"]
    if frac is not None:
        parts.append(f", {frac:g}% labels")
    corruption = results.get("corruption")
    if corruption:
        parts.append(f", {corruption}")
    return "".join(parts) + ")"


def eval_results(results: Mapping[str, Any]) -> list:
    """``huggingface_hub.EvalResult`` entries for a results dict (as written by ``training/evaluate.py``).

    Required keys: ``dataset``, ``split``, ``miou``; optional: ``miou_slidr``, ``accuracy``, ``mode``,
    ``label_fraction``, ``dataset_name``, and ``robustness`` (``{"mce", "mrr", "corruption_dataset"}``).
    """
    from huggingface_hub import EvalResult

    missing = [k for k in ("dataset", "split", "miou") if k not in results]
    if missing:
        raise KeyError(f"results lack {missing}; got keys {sorted(results)}")
    task_name = _setting(results)
    common = dict(task_type=TASK_TYPE, task_name=task_name, dataset_type=str(results["dataset"]),
                  dataset_name=str(results.get("dataset_name", results["dataset"])),
                  dataset_split=str(results["split"]))
    out = []
    for key, metric_type, name in (("miou", "mean_iou", "mIoU"), ("miou_slidr", "mean_iou_slidr", "mIoU (SLidR)"),
                                   ("accuracy", "accuracy", "Accuracy")):
        v = results.get(key)
        if v is not None and not math.isnan(float(v)):
            out.append(EvalResult(**common, metric_type=metric_type, metric_name=name,
                                  metric_value=round(100.0 * float(v), 2)))
    rob = results.get("robustness")
    if rob:
        rob_common = dict(common, dataset_type=str(rob.get("corruption_dataset", f"{results['dataset']}-c")),
                          dataset_name=str(rob.get("corruption_dataset", f"{results['dataset']}-c")),
                          task_name=task_name + " robustness")
        for key, name in (("mce", "mCE"), ("mrr", "mRR")):
            v = rob.get(key)
            if v is not None:
                out.append(EvalResult(**rob_common, metric_type=key, metric_name=name,
                                      metric_value=round(100.0 * float(v), 2)))
    return out


def _key(r: Any) -> tuple:
    return (r.task_type, r.task_name, r.dataset_type, r.dataset_split, r.metric_type)


def update_model_card(folder: str | os.PathLike, results: Mapping[str, Any], model_name: str | None = None) -> Path:
    """Merge ``results`` into ``folder/README.md``'s model-index metadata (creating a minimal card if absent).

    Returns the card's path. Existing entries with the same task, setting, dataset, split and metric are replaced.
    """
    from huggingface_hub import ModelCard, ModelCardData

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"checkpoint folder {folder} does not exist")
    path = folder / "README.md"
    new = eval_results(results)
    if path.is_file():
        card = ModelCard.load(path)
    else:
        name = model_name or folder.name
        data = ModelCardData(library_name="largead", license="apache-2.0",
                             tags=["lidar", "point-cloud", "semantic-segmentation", "largead"], model_name=name)
        card = ModelCard(f"---\n{data.to_yaml()}\n---\n\n# {name}\n\nLiDAR semantic segmentation model trained "
                         f"with [largead]({PAPER_URL}). Evaluation results are in the "
                         "metadata above.\n")
    data = card.data
    keep = [r for r in (data.eval_results or []) if _key(r) not in {_key(n) for n in new}]
    data.eval_results = keep + new
    if not data.model_name:
        data.model_name = model_name or folder.name
    atomic_write_text(path, str(card))
    return path
