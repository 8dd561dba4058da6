"""largead.demo: the quick demo end to end (checkpoint, card, superpixels, pictures, summary) and its error paths."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from largead import demo


@pytest.mark.slow
def test_quick_demo_end_to_end(tmp_path: Path, monkeypatch) -> None:
    import torch
    from huggingface_hub import ModelCard
    from PIL import Image

    from largead import LargeADEncoder
    from largead.config import ConfigMismatchError
    from largead.data import get_dataset
    from largead.hub import validate_folder
    from largead.superpixels import get_source, load_superpixels

    monkeypatch.setenv("LARGEAD_CACHE", str(tmp_path / "cache"))  # the synthetic teacher is trained into here
    out = tmp_path / "demo"
    lines: list[str] = []
    result = demo.run_demo(out, quick=True, log=lines.append)

    # 1. superpixels: one PNG per camera image of the pretraining data, equal to the source's own maps
    from largead.training import pretrain

    cfg = pretrain.load_pretrain_config("synthetic-tiny")
    source = get_source(cfg.superpixels.source, **cfg.superpixels.options)
    assert result.superpixel_dir == out / "superpixels" / f"superpixels_{source.tag}"
    ds = get_dataset(cfg.data[0].name, cfg.data[0].root, cfg.data[0].split, **cfg.data[0].options)
    tokens = sorted(f"{cam.token}.png" for i in range(len(ds)) for cam in ds[i].cameras)
    assert sorted(p.name for p in result.superpixel_dir.glob("*.png")) == tokens
    assert result.num_superpixel_maps == len(tokens)
    cam = ds[len(ds) - 1].cameras[0]
    expected = source.segment(cam.image, cam)
    assert len(np.unique(expected)) > 1
    np.testing.assert_array_equal(load_superpixels(result.superpixel_dir / f"{cam.token}.png"), expected)
    run_config = json.loads((out / "pretrain" / "run_config.json").read_text())  # pretraining read these PNGs
    assert run_config["superpixels"] == {"source": "precomputed",
                                         "options": {"root": str((out / "superpixels").resolve()),
                                                     "kind": source.tag}}

    # 2. a Hub-ready checkpoint (push_to_hub's validation passes) that loads strictly and embeds the example scan
    assert result.checkpoint == out / "pretrain" / "encoder"
    report = validate_folder(result.checkpoint)
    assert report.ok, report.problems
    encoder = LargeADEncoder.from_pretrained(str(result.checkpoint)).eval()
    assert encoder.config.backbone == cfg.model.backbone and "synthetic" in encoder.config.input_norm
    scan = np.load(result.example_scan)
    with torch.no_grad():
        feats = encoder.embed(torch.from_numpy(scan), dataset="synthetic")
    assert feats.shape == (len(scan), cfg.model.out_channels) and torch.isfinite(feats).all()
    np.testing.assert_allclose(feats.norm(dim=1).numpy(), 1.0, atol=1e-4)

    # 3. both probes evaluated; the pretrained one's mIoU in the card's model-index, both in its text
    evals = {name: json.loads((out / f"probe-{name}" / "model" / "eval" / "synthetic-val.json").read_text())
             for name in ("pretrained", "random")}
    assert result.miou_pretrained == pytest.approx(evals["pretrained"]["miou"])
    assert result.miou_random == pytest.approx(evals["random"]["miou"])
    assert evals["random"]["model"] != evals["pretrained"]["model"]
    card = ModelCard.load(result.checkpoint / "README.md")
    assert card.data.library_name == "largead"
    rows = [r for r in card.data.eval_results if r.dataset_type == "synthetic" and r.metric_type == "mean_iou"]
    assert len(rows) == 1 and rows[0].dataset_split == "val"
    assert rows[0].metric_value == pytest.approx(round(100 * evals["pretrained"]["miou"], 2))
    assert "linear probe" in rows[0].task_name
    assert f"| {100 * result.miou_random:.2f} |" in card.text
    assert f"| {100 * result.miou_pretrained:.2f} |" in card.text

    # 4. two readable PNGs of reasonable size
    for png in (result.similarity_png, result.features_png):
        assert png.parent == out and png.stat().st_size < 300_000
        with Image.open(png) as im:
            assert im.format == "PNG" and im.width >= 400 and im.height >= 400

    # 4b. the interactive 3D view of the same kind of scan: one self-contained page with the encoder's features
    html = result.view_html.read_text()
    assert result.view_html == out / "view.html" and result.view_html.stat().st_size < 15_000_000
    assert "largeadViewer" in html and "<script" in html and "http://" not in html.split("<script", 1)[1][:2000]

    # 5. the summary: printed last, saved, and naming everything
    assert lines[-1].strip() == result.summary == (out / "summary.txt").read_text().strip()
    for needle in (str(result.checkpoint), str(result.similarity_png), str(result.features_png), str(result.view_html),
                   f"{100 * result.miou_pretrained:.2f}%", f"{100 * result.miou_random:.2f}%", "largead embed",
                   "push_to_hub.py", "--dry-run"):
        assert needle in result.summary
    assert [ln.split("]")[0] for ln in lines if ln.startswith("\n[")] == ["\n[1/4", "\n[2/4", "\n[3/4", "\n[4/4"]
    saved = json.loads((out / "demo_results.json").read_text())
    assert saved["miou_pretrained"] == pytest.approx(result.miou_pretrained)
    assert set(saved["seconds"]) == {"superpixels", "pretraining", "linear probe", "pictures", "total"}

    # 6. the same folder with other settings is refused before any training, with a way out
    other = dataclasses.replace(demo.QUICK, pretrain_overrides=(*demo.QUICK.pretrain_overrides, "optim.lr=0.123"))
    with pytest.raises(ConfigMismatchError, match="another --output-dir.*optim.lr"):
        demo.run_demo(out, plan=other, log=lambda s: None)
    shutil.rmtree(out)  # ~1 GB of MinkUNet-34 weights and optimiser states; keep pytest's tmp retention small
