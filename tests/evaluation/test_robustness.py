"""mCE / mRR against hand-computed numbers."""

from __future__ import annotations

import pytest

from largead.evaluation.robustness import (
    BASELINES,
    CORRUPTIONS,
    corruption_error,
    resilience_rate,
    robustness_summary,
)


def _sev(a: float, b: float, c: float) -> dict[str, float]:
    return {"light": a, "moderate": b, "heavy": c}


def test_ce_and_rr_hand_values() -> None:
    model = _sev(0.6, 0.5, 0.4)  # sum(1 - m) = 1.5, sum m = 1.5
    base = _sev(0.5, 0.4, 0.1)  # sum(1 - b) = 2.0
    assert corruption_error(model, base) == pytest.approx(0.75)
    assert resilience_rate(model, clean_miou=0.75) == pytest.approx(1.5 / 2.25)


def test_summary_two_corruptions_with_and_without_baseline() -> None:
    results = {"fog": _sev(0.6, 0.5, 0.4), "snow": _sev(0.3, 0.3, 0.3)}
    base = {"fog": _sev(0.5, 0.4, 0.1), "snow": _sev(0.4, 0.4, 0.4)}
    out = robustness_summary(results, clean_miou=0.6, baseline=base)
    # fog: CE 1.5/2.0 = 0.75, RR 1.5/1.8; snow: CE 2.1/1.8, RR 0.9/1.8
    assert out["corruptions"] == ["fog", "snow"]
    assert out["ce"]["snow"] == pytest.approx(2.1 / 1.8)
    assert out["mce"] == pytest.approx((0.75 + 2.1 / 1.8) / 2)
    assert out["mrr"] == pytest.approx((1.5 / 1.8 + 0.9 / 1.8) / 2)
    partial = robustness_summary(results, clean_miou=0.6, baseline={"fog": base["fog"]})
    assert partial["mce"] is None and partial["ce"]["fog"] == pytest.approx(0.75)
    assert robustness_summary(results, 0.6)["mce"] is None


def test_builtin_baseline_reproduces_robo3d_columns() -> None:
    base = BASELINES["semantickitti_c/minkunet18_cr1.0"]
    assert set(base) == set(CORRUPTIONS)
    out = robustness_summary(base, clean_miou=0.6276, baseline=base)
    assert out["mce"] == pytest.approx(1.0)  # the baseline's own CE is 100 %
    # Robo3D's table: RR fog 89.02 %, motion blur 52.45 %, mRR 81.90 %
    assert out["rr"]["fog"] * 100 == pytest.approx(89.02, abs=0.01)
    assert out["rr"]["motion_blur"] * 100 == pytest.approx(52.45, abs=0.01)
    assert out["mrr"] * 100 == pytest.approx(81.90, abs=0.01)


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="missing severities"):
        corruption_error({"light": 0.5}, _sev(0.1, 0.1, 0.1))
    with pytest.raises(ValueError, match="fractions"):
        resilience_rate(_sev(50.0, 40.0, 30.0), 0.6)
    with pytest.raises(ValueError, match="unknown corruptions"):
        robustness_summary({"rain": _sev(0.1, 0.1, 0.1)}, 0.5)


# Robo3D README (ldkong1205/Robo3D, commit eb81d5cd3e593a38f6e1dcdfce475dd457842465), "LiDAR Semantic Segmentation"
# tables, columns Fog .. Cross-Sensor (mean mIoU over the three severities, %), transcribed here by hand so the
# built-in table is checked value by value against the source rather than against itself.
README_NUSC_MINKUNET18 = (53.64, 73.91, 40.35, 73.39, 68.54, 26.58, 63.83, 50.95)  # mCE 100.00, mRR 74.44, clean 75.76
README_NUSC_MINKUNET34 = (56.91, 74.93, 37.50, 75.24, 70.10, 29.32, 64.96, 52.96)  # mCE 96.37, mRR 75.08, clean 76.90
README_SKC_MINKUNET34 = (53.54, 54.27, 50.17, 33.80, 57.35, 58.38, 54.88, 46.95)  # mCE 100.61, mRR 80.22, clean 63.78


def _means(row: tuple[float, ...]) -> dict[str, dict[str, float]]:
    return {c: _sev(v / 100, v / 100, v / 100) for c, v in zip(CORRUPTIONS, row)}


def test_nuscenes_c_baseline_matches_robo3d_readme_value_by_value() -> None:
    from largead.evaluation.robustness import DEFAULT_BASELINE, NUSCENES_C_MINKUNET18_CLEAN

    base = BASELINES["nuscenes_c/minkunet18_cr1.0"]
    assert list(base) == list(CORRUPTIONS)
    assert [round(base[c] * 100, 2) for c in CORRUPTIONS] == list(README_NUSC_MINKUNET18)
    assert DEFAULT_BASELINE["nuscenes_c"] == DEFAULT_BASELINE["nuscenes"] == "nuscenes_c/minkunet18_cr1.0"
    # the README's mRR of the baseline itself (RR uses the model's own means, so the mean-only row suffices)
    own = robustness_summary(_means(README_NUSC_MINKUNET18), NUSCENES_C_MINKUNET18_CLEAN, base)
    assert own["mce"] == pytest.approx(1.0)
    assert own["mrr"] * 100 == pytest.approx(74.44, abs=0.01)


@pytest.mark.parametrize("table, row, clean, mce, mrr", [
    ("nuscenes_c/minkunet18_cr1.0", README_NUSC_MINKUNET34, 0.7690, 96.37, 75.08),
    ("semantickitti_c/minkunet18_cr1.0", README_SKC_MINKUNET34, 0.6378, 100.61, 80.22),
])
def test_readme_rows_of_another_model_recompute_against_the_builtin_baselines(table, row, clean, mce, mrr) -> None:
    """MinkUNet-34's published mCE / mRR follow from its per-corruption means and our baseline tables."""
    out = robustness_summary(_means(row), clean, BASELINES[table])
    assert out["mce"] * 100 == pytest.approx(mce, abs=0.01)
    assert out["mrr"] * 100 == pytest.approx(mrr, abs=0.01)


def test_mean_only_baseline_equals_the_per_severity_form() -> None:
    model = _sev(0.6, 0.5, 0.4)
    assert corruption_error(model, 0.5) == pytest.approx(corruption_error(model, _sev(0.7, 0.5, 0.3)))
    with pytest.raises(ValueError, match=r"baseline: mIoU must be fractions"):
        corruption_error(model, 53.64)  # a percentage, not a fraction
    with pytest.raises(ValueError, match=r"baseline: expected \{severity: mIoU\} or the mean mIoU"):
        corruption_error(model, "0.5")
