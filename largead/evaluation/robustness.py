"""Robustness metrics of the Robo3D benchmark (nuScenes-C / SemanticKITTI-C): corruption error and resilience rate.

Definitions (Robo3D, Kong et al., ICCV 2023; ldkong1205/Robo3D README), with ``mIoU`` as fractions in ``[0, 1]``:

- ``CE_c = sum_s (1 - mIoU_{c,s}) / sum_s (1 - mIoU^baseline_{c,s})`` over the three severities ``s``;
- ``RR_c = sum_s mIoU_{c,s} / (3 * mIoU_clean)``;
- ``mCE`` and ``mRR`` average ``CE_c`` and ``RR_c`` over the corruptions (eight in the benchmark).

Results are reported as fractions (multiply by 100 for the papers' percentages).

Baselines. Robo3D's mCE baseline for LiDAR segmentation is MinkUNet-18 (cr 1.0). Two built-in tables:

- ``semantickitti_c/minkunet18_cr1.0``: per corruption and severity, from ``docs/results/MinkUNet-18_cr1.0.md`` of
  ldkong1205/Robo3D (its CE is 100 by construction and its RR column, e.g. fog 89.02, re-computes from the table).
- ``nuscenes_c/minkunet18_cr1.0``: per corruption, the mean over the three severities, from the nuScenes-C table of
  the Robo3D ``README.md`` (ldkong1205/Robo3D at commit eb81d5cd3e593a38f6e1dcdfce475dd457842465, "LiDAR Semantic
  Segmentation" -> nuScenes-C, row MinkUNet-18, the baseline marked with a star; the same values stand in the
  README's first version, commit 00aa15501329840d41fdd2565dd286572b5eedf3). Robo3D publishes no per-severity
  nuScenes-C table (its ``docs/results/MinkUNet-18_cr1.0.md`` section is empty), and none is needed: CE is a ratio of
  sums over the severities, so ``sum_s (1 - b_s) = 3 (1 - mean_s b_s)`` and the mean gives the exact same CE. A
  baseline entry may therefore be either ``{severity: mIoU}`` or a single number, the mean over the severities.
  Check: the README's MinkUNet-34 nuScenes-C row (mCE 96.37) and SemanticKITTI-C row (100.61) re-compute from these
  tables (``tests/evaluation/test_robustness.py``).

``DEFAULT_BASELINE`` picks the table per dataset; a user-supplied baseline (``training/evaluate.py --baseline``: a
results JSON of the baseline model, or a table name) replaces it. Without a baseline, mCE is ``None`` and mRR alone
is computed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

__all__ = [
    "BASELINES",
    "CORRUPTIONS",
    "DEFAULT_BASELINE",
    "SEVERITIES",
    "corruption_error",
    "resilience_rate",
    "robustness_summary",
]

CORRUPTIONS: tuple[str, ...] = (
    "fog", "wet_ground", "snow", "motion_blur", "beam_missing", "crosstalk", "incomplete_echo", "cross_sensor",
)
"""Robo3D's eight corruptions, in the benchmark's order."""

SEVERITIES: tuple[str, ...] = ("light", "moderate", "heavy")

_SKC_MINKUNET18_PERCENT = {
    "fog": (61.71, 58.32, 47.59),
    "wet_ground": (58.38, 52.38, 51.21),
    "snow": (55.50, 53.70, 50.65),
    "motion_blur": (42.78, 31.62, 24.35),
    "beam_missing": (60.70, 56.78, 51.47),
    "crosstalk": (59.87, 58.47, 56.68),
    "incomplete_echo": (57.89, 54.68, 50.72),
    "cross_sensor": (57.53, 52.08, 28.53),
}

# Robo3D README, nuScenes-C table, row MinkUNet-18 (mean mIoU over the three severities, %); clean 75.76, mRR 74.44.
_NUSC_MINKUNET18_MEAN_PERCENT = {
    "fog": 53.64,
    "wet_ground": 73.91,
    "snow": 40.35,
    "motion_blur": 73.39,
    "beam_missing": 68.54,
    "crosstalk": 26.58,
    "incomplete_echo": 63.83,
    "cross_sensor": 50.95,
}
NUSCENES_C_MINKUNET18_CLEAN = 0.7576
"""Clean nuScenes val mIoU of Robo3D's MinkUNet-18 baseline (same README row)."""

BASELINES: dict[str, dict[str, dict[str, float] | float]] = {
    "semantickitti_c/minkunet18_cr1.0": {
        c: {s: v / 100.0 for s, v in zip(SEVERITIES, vals)} for c, vals in _SKC_MINKUNET18_PERCENT.items()
    },
    "nuscenes_c/minkunet18_cr1.0": {c: v / 100.0 for c, v in _NUSC_MINKUNET18_MEAN_PERCENT.items()},
}
"""Built-in baseline tables ``{name: {corruption: {severity: mIoU fraction} or mean mIoU fraction}}`` (see the module
docstring for sources)."""

DEFAULT_BASELINE = {
    "semantickitti_c": "semantickitti_c/minkunet18_cr1.0",
    "semantickitti": "semantickitti_c/minkunet18_cr1.0",
    "nuscenes_c": "nuscenes_c/minkunet18_cr1.0",
    "nuscenes": "nuscenes_c/minkunet18_cr1.0",
}
"""Default baseline per dataset (the corrupted set's name and its clean dataset's name)."""


def _severities(values: Mapping[str, float], what: str) -> list[float]:
    missing = [s for s in SEVERITIES if s not in values]
    if missing:
        raise ValueError(f"{what}: missing severities {missing}; expected all of {SEVERITIES}")
    out = [float(values[s]) for s in SEVERITIES]
    if not all(0.0 <= v <= 1.0 for v in out):
        raise ValueError(f"{what}: mIoU must be fractions in [0, 1], got {out}")
    return out


def _baseline_severities(baseline: Mapping[str, float] | float) -> list[float]:
    """A baseline entry as three per-severity values; a single number is the mean over the severities (it gives
    the same sum, hence the same CE)."""
    if isinstance(baseline, Mapping):
        return _severities(baseline, "baseline")
    if isinstance(baseline, bool) or not isinstance(baseline, (int, float)):
        raise ValueError(f"baseline: expected {{severity: mIoU}} or the mean mIoU over the severities, got "
                         f"{type(baseline).__name__}")
    return _severities(dict.fromkeys(SEVERITIES, float(baseline)), "baseline")


def corruption_error(miou: Mapping[str, float], baseline: Mapping[str, float] | float) -> float:
    """``CE = sum_s (1 - mIoU_s) / sum_s (1 - baseline_s)`` for one corruption.

    ``miou`` is ``{severity: mIoU}``; ``baseline`` the same, or one number, the baseline's mean over the severities
    (Robo3D's README tables), which gives the same denominator ``3 (1 - mean)``.
    """
    m = _severities(miou, "model")
    b = _baseline_severities(baseline)
    denom = sum(1.0 - v for v in b)
    if denom <= 0:
        raise ValueError("baseline mIoU is 1.0 at every severity; corruption error undefined")
    return sum(1.0 - v for v in m) / denom


def resilience_rate(miou: Mapping[str, float], clean_miou: float) -> float:
    """``RR = sum_s mIoU_s / (3 * clean mIoU)`` for one corruption."""
    if not clean_miou > 0:
        raise ValueError(f"clean mIoU must be positive, got {clean_miou}")
    return sum(_severities(miou, "model")) / (len(SEVERITIES) * float(clean_miou))


def robustness_summary(
    results: Mapping[str, Mapping[str, float]],
    clean_miou: float,
    baseline: Mapping[str, Mapping[str, float] | float] | None = None,
) -> dict:
    """CE and RR per corruption, with mCE and mRR, from ``results[corruption][severity] = mIoU``.

    ``baseline`` has the same layout (or one mean mIoU per corruption, see :func:`corruption_error`); it must cover
    every corruption in ``results`` or mCE is undefined (``None``).
    Returns ``{"ce": {c: float|None}, "rr": {c: float}, "mce": float|None, "mrr": float, "corruptions": [...]}``.
    """
    if not results:
        raise ValueError("no corruption results given")
    unknown = sorted(set(results) - set(CORRUPTIONS))
    if unknown:
        raise ValueError(f"unknown corruptions {unknown}; expected names from {CORRUPTIONS}")
    names = [c for c in CORRUPTIONS if c in results]
    rr = {c: resilience_rate(results[c], clean_miou) for c in names}
    ce: dict[str, float | None] = {}
    for c in names:
        ce[c] = corruption_error(results[c], baseline[c]) if baseline is not None and c in baseline else None
    have_all = all(v is not None for v in ce.values())
    return {
        "corruptions": names,
        "ce": ce,
        "rr": rr,
        "mce": (math.fsum(ce.values()) / len(ce)) if have_all else None,  # type: ignore[arg-type]
        "mrr": math.fsum(rr.values()) / len(rr),
    }
