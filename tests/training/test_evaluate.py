"""training/evaluate.py: per-point metrics vs an independent recomputation, robustness, model card, 2 processes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard

from largead.data.registry import get_dataset
from largead.data.synthetic import SYNTHETIC_CLASSES
from largead.models.encoder import LargeADConfig, LargeADEncoder
from largead.models.heads import SegmentationModel
from largead.training import evaluate

REPO = Path(__file__).resolve().parents[2]

OPTS = dict(num_sequences=1, frames_per_sequence=3, num_cameras=1, beams=16, azimuth_resolution=1.0)
OPT_ARGS = [a for k, v in OPTS.items() for a in ("--option", f"{k}={v}")]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    enc = LargeADEncoder(LargeADConfig(backbone="minkunet14"))
    model = SegmentationModel(enc, len(SYNTHETIC_CLASSES), mode="finetune", class_names=SYNTHETIC_CLASSES)
    with torch.no_grad():  # a head that predicts several classes, so the confusion matrix is not one column
        model.encoder.final.kernel.normal_(0, 1.0)
    folder = tmp_path_factory.mktemp("model") / "model"
    model.save_pretrained(folder, dataset="synthetic", label_fraction=10)
    return folder


def _reference_miou(folder: Path) -> tuple[np.ndarray, float]:
    """Independent recomputation: one frame at a time, counts with np.add.at, IoU class by class."""
    model = SegmentationModel.from_pretrained(folder).eval()
    ds = get_dataset("synthetic", None, "val", **OPTS)
    cm = np.zeros((12, 12), np.int64)
    with torch.no_grad():
        for i in range(len(ds)):
            f = ds[i]
            feats = model.encoder.embed(f.points, precision="fp32")  # per point, through the encoder's own path (normalize off)
            pred = feats.argmax(1).numpy()
            keep = f.labels >= 0
            np.add.at(cm, (f.labels[keep], pred[keep]), 1)
    ious = []
    for c in range(12):
        union = cm[c].sum() + cm[:, c].sum() - cm[c, c]
        if union:
            ious.append(cm[c, c] / union)
    return cm, float(np.mean(ious))


def test_results_match_independent_computation(model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    res = evaluate.main(evaluate.parse_args(["--model", str(model_dir), "--split", "val", "--batch_size", "2",
                                             "--output", str(out), *OPT_ARGS]))
    cm, ref = _reference_miou(model_dir)
    saved = json.loads(out.read_text())
    assert np.array_equal(np.array(saved["confusion_matrix"]), cm)
    assert saved["miou"] == pytest.approx(ref)
    assert saved["num_frames"] == 3 and saved["label_fraction"] == 10 and saved["dataset"] == "synthetic"
    assert set(saved["iou_per_class"]) == set(SYNTHETIC_CLASSES)
    assert saved["miou_slidr"] >= saved["miou"]
    assert res["accuracy"] == pytest.approx(np.trace(cm) / cm.sum())
    card = ModelCard.load(model_dir / "README.md")
    vals = {r.metric_type: r.metric_value for r in card.data.eval_results}
    assert vals["mean_iou"] == round(100 * ref, 2)


def test_corruptions_ce_rr_against_baseline_file(model_dir: Path, tmp_path: Path) -> None:
    base = {"light": 0.2, "moderate": 0.1, "heavy": 0.05}
    (tmp_path / "base.json").write_text(json.dumps({"corruption_miou": {"beam_missing": base}}))
    res = evaluate.main(evaluate.parse_args([
        "--model", str(model_dir), "--max_frames", "1", "--corruptions", "beam_missing", "--no_card",
        "--baseline", str(tmp_path / "base.json"), "--output", str(tmp_path / "r.json"), *OPT_ARGS]))
    rob, table = res["robustness"], res["corruption_miou"]["beam_missing"]
    assert rob["corruptions"] == ["beam_missing"] and rob["baseline"] == str(tmp_path / "base.json")
    m = [table[s] for s in ("light", "moderate", "heavy")]
    assert rob["ce"]["beam_missing"] == pytest.approx(sum(1 - v for v in m) / (0.8 + 0.9 + 0.95))
    assert rob["mrr"] == pytest.approx(sum(m) / (3 * res["miou"]))
    assert len(set(m)) > 1  # the severities really changed the input


def test_errors(model_dir: Path) -> None:
    with pytest.raises(ValueError, match="unknown"):
        evaluate.main(evaluate.parse_args(["--model", str(model_dir), "--corruptions", "rain", *OPT_ARGS]))
    with pytest.raises(FileNotFoundError, match="segmentation.json"):
        evaluate.main(evaluate.parse_args(["--model", str(model_dir.parent), *OPT_ARGS]))


@pytest.mark.slow
def test_two_processes_equal_one(model_dir: Path, tmp_path: Path) -> None:
    common = ["--model", str(model_dir), "--no_card", *OPT_ARGS]
    one = evaluate.main(evaluate.parse_args([*common, "--output", str(tmp_path / "one.json")]))
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    with socket.socket() as s:  # a free port: other test processes on this machine may use accelerate's default
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2", "--num_machines", "1",
           "--main_process_port", str(port), "--mixed_precision", "no", "--dynamo_backend", "no",
           str(REPO / "training" / "evaluate.py"),
           *common, "--output", str(tmp_path / "two.json")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = json.loads((tmp_path / "two.json").read_text())
    assert two["confusion_matrix"] == one["confusion_matrix"]
    assert two["miou"] == one["miou"] and two["num_points"] == one["num_points"]


def test_one_read_per_frame_gives_the_same_numbers_as_separate_passes(model_dir: Path, tmp_path: Path) -> None:
    """Clean and corrupted variants share one read of each frame; every variant's mIoU equals its own pass."""
    from largead.data.corruptions import corrupt
    from largead.data.registry import get_dataset

    res = evaluate.main(evaluate.parse_args([
        "--model", str(model_dir), "--max_frames", "2", "--corruptions", "beam_missing,fog", "--no_card",
        "--output", str(tmp_path / "r.json"), *OPT_ARGS]))
    model = SegmentationModel.from_pretrained(model_dir).eval()
    dataset = get_dataset("synthetic", None, "val", **OPTS)
    idx = np.arange(2)
    (clean,) = evaluate.confusion_on_frames(model, dataset, idx, "synthetic")
    assert res["miou"] == pytest.approx(clean.compute()["miou"], abs=1e-12)
    for c in ("beam_missing", "fog"):
        for s in ("light", "heavy"):
            (cm,) = evaluate.confusion_on_frames(model, dataset, idx, "synthetic",
                                                 transforms=[lambda f, i, c=c, s=s: corrupt(f, c, s, seed=i)])
            assert res["corruption_miou"][c][s] == pytest.approx(cm.compute()["miou"], abs=1e-12)


def test_corrupted_root_needs_corruptions_and_a_released_copy(model_dir, tmp_path):
    with pytest.raises(ValueError, match="--corrupted-root needs --corruptions"):
        evaluate.main(evaluate.parse_args(["--model", str(model_dir), *OPT_ARGS, "--corrupted-root", str(tmp_path),
                                           "--no-card", "--cpu"]))
    with pytest.raises(ValueError, match="no released corrupted copy of 'synthetic'"):
        evaluate.main(evaluate.parse_args(["--model", str(model_dir), *OPT_ARGS, "--corrupted-root", str(tmp_path),
                                           "--corruptions", "fog", "--no-card", "--cpu",
                                           "--output", str(tmp_path / "r.json")]))


def test_training_reader_options_apply_unless_overridden(tmp_path):
    """segmentation.json's dataset_options (written by finetune.py) open the evaluated dataset when it is the
    training one; --option overrides them; another dataset does not get them."""
    torch.manual_seed(0)
    model = SegmentationModel(LargeADEncoder(LargeADConfig(backbone="minkunet14")), len(SYNTHETIC_CLASSES),
                              mode="finetune", class_names=SYNTHETIC_CLASSES)
    folder = tmp_path / "model"
    model.save_pretrained(folder, dataset="synthetic", dataset_options={**OPTS, "frames_per_sequence": 2})
    common = ["--model", str(folder), "--no-card", "--cpu", "--output", str(tmp_path / "r.json")]
    assert evaluate.main(evaluate.parse_args(common))["num_frames"] == 2
    assert evaluate.main(evaluate.parse_args([*common, "--option", "frames_per_sequence=3"]))["num_frames"] == 3
