"""Downstream evaluation: segmentation metrics, Robo3D robustness (mCE / mRR), calibration stress, model-card report.

- :mod:`.metrics` — confusion matrix, per-class IoU, ``miou`` (standard) and ``miou_slidr`` (empty union = 1.0),
  accuracy, a process-summable :class:`ConfusionMatrix` and an exact per-process frame partition.
- :mod:`.robustness` — corruption error, resilience rate, mCE / mRR and built-in baseline tables.
- :mod:`.calibration` — camera-LiDAR miscalibration sweep for pretraining pairs.
- :mod:`.report` — results JSON (model-card ``model-index`` entries: :func:`largead.cards.update_card_results`).
"""

from largead.evaluation.calibration import (
    PerturbedExtrinsics,
    calibration_stress,
    perturb_frame,
)
from largead.evaluation.metrics import (
    ConfusionMatrix,
    accuracy,
    confusion_matrix,
    frame_partition,
    iou_per_class,
    miou,
    miou_slidr,
    predict,
)
from largead.evaluation.report import write_results
from largead.evaluation.robustness import (
    BASELINES,
    CORRUPTIONS,
    SEVERITIES,
    corruption_error,
    resilience_rate,
    robustness_summary,
)

__all__ = [
    "BASELINES",
    "CORRUPTIONS",
    "SEVERITIES",
    "ConfusionMatrix",
    "PerturbedExtrinsics",
    "accuracy",
    "calibration_stress",
    "confusion_matrix",
    "corruption_error",
    "frame_partition",
    "iou_per_class",
    "miou",
    "miou_slidr",
    "perturb_frame",
    "predict",
    "resilience_rate",
    "robustness_summary",
    "write_results",
]
