"""One linear probe: train a classifier on a frozen encoder, then evaluate it per point (the demo and
``scripts/reproduce_synthetic.py`` both measure encoders this way).

    res = linear_probe("outputs/demo/pretrain/encoder", "runs/probe", dataset="synthetic",
                       train_options={"num_sequences": 2}, val_options={"num_sequences": 1})
    res["miou"]

It runs :func:`largead.training.finetune.main` in ``linear_probe`` mode with the given config (default
``linear-probe-synthetic``) and overrides, then :func:`largead.training.evaluate.main` on the validation split. A
finished probe in ``output_dir`` is resumed (its training is not repeated).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def linear_probe(pretrained: str | Path | None, output_dir: str | Path, *, dataset: str,
                 train_options: Mapping[str, Any] | None = None, val_options: Mapping[str, Any] | None = None,
                 config: str = "linear-probe-synthetic", root: str | None = None, seed: int | None = None,
                 overrides: Sequence[str] = (), val_split: str = "val", results_path: str | Path | None = None,
                 update_card: bool = True) -> dict[str, Any]:
    """Linear-probe ``pretrained`` (an encoder folder or Hub id; ``None``: random initialisation with the config's
    ``model``) on ``dataset`` and return the evaluation results (``miou``, ``miou_slidr``, ``iou_per_class``,
    ``num_frames``...; ``results["model"]`` is the probe's folder).

    ``train_options`` / ``val_options``: reader options of the training and validation data; ``overrides``:
    ``key=value`` edits of the fine-tuning config (epochs, batch size, learning rate...); ``results_path``: where the
    results JSON goes (default: beside the model); ``update_card``: write the numbers into the probe model's card.
    """
    from largead.config import format_override
    from largead.training import evaluate, finetune

    argv = ["--config", config, "--output-dir", str(output_dir), "--mode", "linear_probe", "--dataset", dataset,
            "--pretrained", "none" if pretrained is None else str(pretrained)]
    argv += ["--root", root] if root is not None else []
    argv += ["--seed", str(seed)] if seed is not None else []
    if train_options:
        argv.append(f"data.options={format_override(dict(train_options))}")
    model_dir = finetune.main(finetune.parse_args([*argv, *overrides]))
    ev = ["--model", str(model_dir), "--dataset", dataset, "--split", val_split]
    ev += ["--root", root] if root is not None else []
    ev += ["--output", str(results_path)] if results_path is not None else []
    ev += [] if update_card else ["--no-card"]
    for key, value in (val_options or {}).items():
        ev += ["--option", f"{key}={format_override(value)}"]
    return evaluate.main(evaluate.parse_args(ev))


__all__ = ["linear_probe"]
