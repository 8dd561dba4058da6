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
