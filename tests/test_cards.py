"""Model cards: one rendered card per zoo entry, YAML metadata as the Hub expects."""

from pathlib import Path

import pytest
from huggingface_hub import ModelCard

from largead import cards, zoo

ROOT = Path(__file__).resolve().parents[1]


def test_every_registry_entry_has_an_up_to_date_card():
    for info in zoo.REGISTRY.values():
        path = ROOT / "model_cards" / f"{info.short_name}.md"
        assert path.is_file(), f"missing card {path.name}: run scripts/render_model_cards.py"
        assert path.read_text(encoding="utf-8") == str(cards.render_card(info)), f"stale card {path.name}"


@pytest.mark.parametrize("name", ["minkunet34-seem-nkw", "minkunet34-random", "minkunet34-slic-n-resnet50"])
def test_card_metadata_parses(name):
    card = ModelCard((ROOT / "model_cards" / f"{name}.md").read_text(encoding="utf-8"))
    meta = card.data.to_dict()
    assert meta["library_name"] == "largead"
    assert {"lidar", "point-cloud", "largead"} <= set(meta["tags"])
    info = zoo.model_info(name)
    assert meta.get("datasets", []) == list(info.pretraining_datasets)
    if info.paper_results:
        values = sorted(m["value"] for r in meta["model-index"][0]["results"] for m in r["metrics"])
        assert values == sorted(round(r.miou, 2) for r in info.paper_results)
    else:
        assert "model-index" not in meta


def test_seem_nkw_card_reports_its_table_11_number():
    card = ModelCard((ROOT / "model_cards" / "minkunet34-seem-nkw.md").read_text(encoding="utf-8"))
    results = card.data.eval_results
    assert len(results) == 1
    r = results[0]
    assert (r.dataset_type, r.metric_type, r.metric_value) == ("nuscenes", "mean_iou", 47.84)
    assert "Table 11" in r.source_name
    assert "largead/minkunet34-seem-nkw" in card.text and "## Limitations" in card.text and "@article" in card.text


def test_write_card_with_measured_results(tmp_path):
    results = [{"dataset": "synthetic", "protocol": "linear_probe", "fraction": 100, "miou": 41.234, "split": "val"}]
    path = cards.write_card(tmp_path, {"lr": 0.5, "epochs": 2}, results=results, repo_id="me/encoder",
                            config={"backbone": "minkunet34", "voxel_size": [0.05, 0.05, 0.05], "cylindrical": False})
    card = ModelCard.load(path)
    (r,) = card.data.eval_results
    assert (r.dataset_type, r.dataset_split, r.metric_value) == ("synthetic", "val", 41.23)
    assert "lr: 0.5" in card.text and "Cartesian: 0.05 x 0.05 x 0.05 m" in card.text
    assert not list(tmp_path.glob(".README.md.*")), "temporary file left behind"


def test_eval_results_rejects_incomplete_rows():
    with pytest.raises(KeyError, match="miou"):
        cards.eval_results([{"dataset": "nuscenes", "protocol": "finetune", "fraction": 1}])
