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
    assert "datasets" not in meta  # not Hub dataset ids: named in the text instead
    for d in info.pretraining_datasets:
        assert cards.DATASET_NAMES[d] in card.text
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
    results = [{"dataset": "synthetic", "split": "val", "miou": 0.41234, "mode": "linear_probe"}]
    path = cards.write_card(tmp_path, {"lr": 0.5, "epochs": 2}, results=results, repo_id="me/encoder",
                            config={"backbone": "minkunet34", "voxel_size": [0.05, 0.05, 0.05], "cylindrical": False})
    card = ModelCard.load(path)
    (r,) = card.data.eval_results
    assert (r.dataset_type, r.dataset_split, r.metric_value) == ("synthetic", "val", 41.23)
    assert "| 41.23 |" in card.text and "No results yet" not in card.text
    assert "lr: 0.5" in card.text and "Cartesian: 0.05 x 0.05 x 0.05 m" in card.text
    assert not list(tmp_path.glob(".README.md.*")), "temporary file left behind"


def test_eval_results_reject_incomplete_rows():
    with pytest.raises(KeyError, match="miou"):
        cards.paper_eval_results([{"dataset": "nuscenes", "protocol": "finetune", "fraction": 1}])
    with pytest.raises(KeyError, match="miou"):
        cards.measured_eval_results({"dataset": "x", "split": "val"})


RESULTS = {"dataset": "nuscenes", "split": "val", "miou": 0.4495, "miou_slidr": 0.46, "accuracy": 0.9,
           "mode": "linear_probe", "label_fraction": 100}


def _section(text: str, heading: str = "## Evaluation") -> str:
    start = text.index(heading)
    end = text.find("\n## ", start + len(heading))
    return text[start:end if end >= 0 else None]


def test_update_card_results_replaces_same_setting_and_keeps_text_and_metadata_in_step(tmp_path):
    path = cards.update_card_results(tmp_path, RESULTS)  # no card yet: one is rendered first
    card = ModelCard.load(path)
    assert card.data.library_name == "largead" and card.data.license == "apache-2.0"  # no training data recorded
    miou = [r for r in card.data.eval_results if r.metric_type == "mean_iou"]
    assert len(miou) == 1 and len(card.data.eval_results) == 3
    assert (miou[0].task_type, miou[0].dataset_type, miou[0].dataset_split, miou[0].metric_value) == (
        "semantic-segmentation", "nuscenes", "val", 44.95)
    cards.update_card_results(tmp_path, dict(RESULTS, miou=0.5))  # same setting: replaced
    cards.update_card_results(tmp_path, dict(RESULTS, label_fraction=1, miou=0.2))  # another fraction: added
    card = ModelCard.load(path)
    assert sorted(r.metric_value for r in card.data.eval_results if r.metric_type == "mean_iou") == [20.0, 50.0]
    section = _section(card.text)
    assert "No results yet" not in section and "| 50.00 |" in section and "| 20.00 |" in section
    assert "44.95" not in section  # the replaced number is gone from the text too
    assert "## Limitations" in card.text  # the sections after Evaluation survive


def test_update_card_results_keeps_a_foreign_card_and_adds_robustness(tmp_path):
    (tmp_path / "README.md").write_text("---\nlicense: apache-2.0\nmodel_name: m\n---\n\n# My card\n\nBody text.\n")
    cards.update_card_results(tmp_path, dict(RESULTS, robustness={"mce": 1.05, "mrr": 0.8,
                                                                   "corruption_dataset": "nuscenes_c"}))
    card = ModelCard.load(tmp_path / "README.md")
    assert "Body text." in card.text and "## Evaluation" in card.text
    by_type = {r.metric_type: r for r in card.data.eval_results}
    assert by_type["mce"].metric_value == 105.0 and by_type["mce"].dataset_type == "nuscenes_c"
    assert by_type["mrr"].metric_value == 80.0
    with pytest.raises(FileNotFoundError):
        cards.update_card_results(tmp_path / "missing", RESULTS)


def test_zoo_card_keeps_paper_rows_beside_measured_ones(tmp_path):
    cards.write_card(tmp_path, name="largead/minkunet34-seem-nkw")
    cards.update_card_results(tmp_path, RESULTS)
    card = ModelCard.load(tmp_path / "README.md")
    sources = sorted(bool(r.source_name) for r in card.data.eval_results)
    assert sources == [False, False, False, True]  # 3 measured rows + the paper's Table 11 number
    section = _section(card.text)
    assert section.index("Measured on these weights") < section.index("Reported by the LargeAD paper")


@pytest.mark.parametrize("datasets, expected", [
    ([], {"license": "apache-2.0"}),
    (["synthetic"], {"license": "apache-2.0"}),
    (["nuscenes"], {"license": "cc-by-nc-sa-4.0"}),
    (["semantickitti", "synthetic"], {"license": "cc-by-nc-sa-4.0"}),
    (["rellis3d", "nuscenes"], {"license": "cc-by-nc-sa-3.0"}),
    (["nuscenes", "waymo"], {"license": "other", "license_name": "waymo-open-dataset-non-commercial",
                             "license_link": "https://waymo.com/open/terms/"}),
    (["synlidar"], {"license": "other", "license_name": "synlidar-terms"}),
])
def test_licence_follows_the_training_data(datasets, expected):
    assert cards.card_license(datasets) == expected


def test_zoo_cards_licence_and_no_dataset_ids():
    for name, lic in (("minkunet34-seem-n", "cc-by-nc-sa-4.0"), ("minkunet34-seem-k", "cc-by-nc-sa-4.0"),
                      ("minkunet34-seem-w", "other"), ("minkunet34-random", "apache-2.0")):
        data = cards.render_card(f"largead/{name}").data
        assert data.license == lic, name
        assert not data.datasets  # none of these is a Hugging Face dataset id


def test_with_repo_id_rewrites_the_placeholder_everywhere():
    text = str(cards.render_card(None, config={"backbone": "minkunet14"}, results=[RESULTS]))
    assert cards.PLACEHOLDER_REPO in text
    pushed = cards.with_repo_id(text, "me/my-encoder")
    card = ModelCard(pushed)
    assert card.data.model_name == "me/my-encoder" and cards.PLACEHOLDER_REPO not in pushed
    assert 'from_pretrained("me/my-encoder")' in pushed and "# my-encoder\n" in pushed
    assert [r.metric_value for r in card.data.eval_results] == [r.metric_value for r in
                                                                 ModelCard(text).data.eval_results]


def test_encoder_and_segmentation_model_cards_survive_save_and_load(tmp_path):
    from largead import LargeADConfig, LargeADEncoder
    from largead.models.heads import SegmentationModel

    enc = LargeADEncoder(LargeADConfig(backbone="minkunet14"))
    enc.save_pretrained(tmp_path / "enc")
    card = ModelCard.load(tmp_path / "enc" / "README.md")
    assert card.data.library_name == "largead" and card.data.pipeline_tag == "feature-extraction"
    assert "This model has been pushed to the Hub" not in card.text  # not the mixin's generic card
    (tmp_path / "enc" / "README.md").write_text(str(card).replace("## Use", "## Use\n\nMy note."))
    again = LargeADEncoder.from_pretrained(tmp_path / "enc")
    again.save_pretrained(tmp_path / "copy")
    assert "My note." in (tmp_path / "copy" / "README.md").read_text()  # the card travels with the weights

    seg = SegmentationModel(again, 3, mode="finetune", class_names=["road", "car", "tree"])
    seg.save_pretrained(tmp_path / "seg", dataset="synthetic", label_fraction=10, pretrained=str(tmp_path / "enc"))
    seg_card = ModelCard.load(tmp_path / "seg" / "README.md")
    assert "per-point logits over 3 classes" in seg_card.text and "`road`, `car`, `tree`" in seg_card.text
    assert "My note." not in seg_card.text and seg_card.data.license == "apache-2.0"
