"""Results JSON and model-card metadata round trip through huggingface_hub."""

from __future__ import annotations

import json

import pytest
from huggingface_hub import ModelCard

from largead.evaluation.report import update_model_card, write_results

RESULTS = {"dataset": "nuscenes", "split": "val", "miou": 0.4495, "miou_slidr": 0.46, "accuracy": 0.9,
           "mode": "linear_probe", "label_fraction": 100}


def test_creates_minimal_card_and_replaces_same_setting(tmp_path) -> None:
    path = update_model_card(tmp_path, RESULTS, model_name="probe")
    card = ModelCard.load(path)
    assert card.data.model_name == "probe"
    miou = [r for r in card.data.eval_results if r.metric_type == "mean_iou"]
    assert len(miou) == 1
    r = miou[0]
    assert (r.task_type, r.dataset_type, r.dataset_split, r.metric_value) == (
        "semantic-segmentation", "nuscenes", "val", 44.95)
    assert len(card.data.eval_results) == 3
    # same setting again: replaced, not duplicated; another fraction: added
    update_model_card(tmp_path, dict(RESULTS, miou=0.5))
    update_model_card(tmp_path, dict(RESULTS, label_fraction=1, miou=0.2))
    card = ModelCard.load(path)
    values = sorted(r.metric_value for r in card.data.eval_results if r.metric_type == "mean_iou")
    assert values == [20.0, 50.0]


def test_keeps_existing_card_text_and_adds_robustness(tmp_path) -> None:
    (tmp_path / "README.md").write_text("---\nlicense: apache-2.0\nmodel_name: m\n---\n\n# My card\n\nBody text.\n")
    update_model_card(tmp_path, dict(RESULTS, robustness={"mce": 1.05, "mrr": 0.8, "corruption_dataset": "nuscenes_c"}))
    card = ModelCard.load(tmp_path / "README.md")
    assert "Body text." in card.text
    by_type = {r.metric_type: r for r in card.data.eval_results}
    assert by_type["mce"].metric_value == 105.0 and by_type["mce"].dataset_type == "nuscenes_c"
    assert by_type["mrr"].metric_value == 80.0


def test_errors_and_json(tmp_path) -> None:
    with pytest.raises(KeyError, match="miou"):
        update_model_card(tmp_path, {"dataset": "x", "split": "val"})
    with pytest.raises(FileNotFoundError):
        update_model_card(tmp_path / "missing", RESULTS)
    p = write_results(tmp_path / "r.json", {"miou": float("nan"), "per": {"a": 1.0}})
    assert json.loads(p.read_text()) == {"miou": None, "per": {"a": 1.0}}
