"""The downstream protocols the papers report, per dataset: which label fractions, which configs, whose settings.

One table (:data:`PROTOCOLS`) for the whole project: the downstream configs (``training/configs/linear-probe-
<dataset>.yaml`` and ``finetune-<dataset>.yaml``) document it, the model cards and the tests read it.

Sources of the label fractions (the columns of the papers' tables):

- nuScenes: linear probing and fine-tuning with 1, 5, 10, 25 and 100 % of the training scenes; SemanticKITTI,
  Waymo Open and Synth4D: fine-tuning with 1 %. SLidR (CVPR 2022) Tables 1-2, Seal (NeurIPS 2023) Table 1, LargeAD
  (arXiv 2501.04005) Table 1; youquanl/Segment-Any-Point-Cloud ``README.md``, "Benchmark".
- ScribbleKITTI, RELLIS-3D and SynLiDAR 1 and 10 %; SemanticPOSS, SemanticSTF and DAPS-3D half (50 %) and full
  (100 %). Seal Table 2, LargeAD Table 2; the same README, "Downstream Generalization".
- nuScenes-C and SemanticKITTI-C (Robo3D) are evaluation-only: the nuScenes / SemanticKITTI models are evaluated on
  them (``evaluate.py --corruptions all --corrupted-root <folder>``, or ``--dataset nuscenes_c`` per corruption).

How a fraction selects frames is SLidR's rule (:mod:`largead.data.splits`): every k-th *scene* of nuScenes (1 % of
its 700 training scenes keeps 7), every k-th frame of the sorted training scans elsewhere. Only nuScenes is linearly
probed in the papers; the other datasets' ``linear-probe-*`` configs (all labels) are ours.

Hyperparameters: SLidR's ``config/semseg_nuscenes.yaml`` / ``semseg_kitti.yaml`` for nuScenes (batch 16, lr 0.02)
and SemanticKITTI (batch 10, lr 0.05), head lr 2.0, 100 epochs, linear probing lr 0.05. The papers give none for the
other datasets; their configs use SemanticKITTI's (the natural base for these KITTI-like sensors), which are
therefore **ours**, and say so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

__all__ = ["EVALUATION_ONLY", "PROTOCOLS", "Protocol", "config_name", "downstream_configs", "label_fractions"]

Mode = Literal["linear_probe", "finetune"]


@dataclass(frozen=True)
class Protocol:
    """One dataset's downstream protocol.

    ``linear_probe``: label fractions (percent) the papers linearly probe with (empty: not reported, our configs use
    100); ``finetune``: fractions they fine-tune with; ``hyperparameters``: ``"slidr"`` (SLidR's settings for this
    dataset) or ``"ours"`` (SemanticKITTI's, as the papers give none); ``results``: mIoU (%) the papers report per
    method and column (``"lp"`` or the fraction), from the README cited in the module docstring."""

    dataset: str
    title: str
    linear_probe: tuple[float, ...]
    finetune: tuple[float, ...]
    hyperparameters: Literal["slidr", "ours"]
    results: dict[str, dict[str, float]] = field(default_factory=dict)


_RANDOM_SLIDR_SEAL = ("random", "slidr", "seal")


def _results(columns: tuple[str, ...], *rows: tuple[float, ...]) -> dict[str, dict[str, float]]:
    return {m: dict(zip(columns, row)) for m, row in zip(_RANDOM_SLIDR_SEAL, rows)}


PROTOCOLS: dict[str, Protocol] = {p.dataset: p for p in (
    Protocol("nuscenes", "nuScenes", (100,), (1, 5, 10, 25, 100), "slidr",
             _results(("lp", "1", "5", "10", "25", "100"), (8.10, 30.30, 47.84, 56.15, 65.48, 74.66),
                      (38.80, 38.30, 52.49, 59.84, 66.91, 74.79), (44.95, 45.84, 55.64, 62.97, 68.41, 75.60))),
    Protocol("semantickitti", "SemanticKITTI", (), (1,), "slidr", _results(("1",), (39.50,), (44.60,), (46.63,))),
    Protocol("waymo", "Waymo Open", (), (1,), "ours", _results(("1",), (39.41,), (47.12,), (49.34,))),
    Protocol("synth4d", "Synth4D", (), (1,), "ours", _results(("1",), (20.22,), (63.10,), (64.50,))),
    Protocol("scribblekitti", "ScribbleKITTI", (), (1, 10), "ours",
             _results(("1", "10"), (23.81, 47.60), (39.60, 50.45), (40.64, 52.77))),
    Protocol("rellis3d", "RELLIS-3D", (), (1, 10), "ours",
             _results(("1", "10"), (38.46, 53.60), (49.75, 54.57), (51.09, 55.03))),
    Protocol("semanticposs", "SemanticPOSS", (), (50, 100), "ours",
             _results(("50", "100"), (46.26, 54.12), (51.56, 55.36), (53.26, 56.89))),
    Protocol("semanticstf", "SemanticSTF", (), (50, 100), "ours",
             _results(("50", "100"), (48.03, 48.15), (52.01, 54.35), (53.46, 55.36))),
    Protocol("synlidar", "SynLiDAR", (), (1, 10), "ours",
             _results(("1", "10"), (19.89, 44.74), (42.05, 47.84), (43.58, 49.26))),
    Protocol("daps3d", "DAPS-3D", (), (50, 100), "ours",
             _results(("50", "100"), (74.32, 79.38), (81.00, 85.40), (81.88, 85.90))),
)}
"""Dataset (registry name) -> :class:`Protocol`, for every dataset with downstream configs (ten)."""

EVALUATION_ONLY: dict[str, str] = {"nuscenes_c": "nuscenes", "semantickitti_c": "semantickitti"}
"""Evaluation-only datasets (Robo3D) -> the dataset whose models are evaluated on them (no configs of their own)."""


def config_name(dataset: str, mode: Mode) -> str:
    """``linear-probe-<dataset>`` or ``finetune-<dataset>`` (the file in ``training/configs``, without ``.yaml``)."""
    if dataset not in PROTOCOLS:
        raise KeyError(f"no downstream protocol for {dataset!r}; known: {', '.join(PROTOCOLS)}"
                       + (f" ({dataset} is evaluation-only: evaluate a {EVALUATION_ONLY[dataset]} model on it)"
                          if dataset in EVALUATION_ONLY else ""))
    return f"{'linear-probe' if mode == 'linear_probe' else 'finetune'}-{dataset}"


def label_fractions(dataset: str, mode: Mode) -> tuple[float, ...]:
    """The label fractions (percent) of ``dataset``'s protocol in ``mode``; linear probing that no paper reports
    uses all labels (100)."""
    config_name(dataset, mode)  # validates the name
    p = PROTOCOLS[dataset]
    return (p.linear_probe or (100,)) if mode == "linear_probe" else p.finetune


def downstream_configs() -> list[tuple[str, Mode, float]]:
    """Every ``(config name, mode, label fraction)`` of the protocols: what the downstream matrix runs."""
    return [(config_name(d, m), m, f) for d in PROTOCOLS for m in ("linear_probe", "finetune")
            for f in label_fractions(d, m)]
