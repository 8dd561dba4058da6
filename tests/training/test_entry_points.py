"""Every training entry point (pretrain.py, finetune.py, evaluate.py) with bad input: one line on stderr naming the
file, key or value, a non-zero exit, and nothing written into the output folder. Run in-process through each
module's ``cli(argv)`` (what ``training/*.py`` call), so the table stays fast."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from largead.training import evaluate, finetune, pretrain

TINY_WORLD = "{num_sequences: 1, frames_per_sequence: 2, num_cameras: 1, beams: 8, azimuth_resolution: 4.0}"


def _run(cli, argv: list[str], capsys) -> tuple[int, list[str]]:
    with pytest.raises(SystemExit) as exit_info:
        cli(argv)
    err = capsys.readouterr().err
    lines = [ln for ln in err.replace("\r", "\n").splitlines() if ": error: " in ln or ln.startswith("usage:")]
    assert "Traceback" not in err, err
    return int(exit_info.value.code), lines


def _tree(folder: Path) -> list[str] | None:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else None


@pytest.fixture(scope="module")
def segmentation_model(tmp_path_factory) -> Path:
    from largead.data.synthetic import SYNTHETIC_CLASSES
    from largead.models.encoder import LargeADConfig, LargeADEncoder
    from largead.models.heads import SegmentationModel

    folder = tmp_path_factory.mktemp("seg") / "model"
    torch.manual_seed(0)
    enc = LargeADEncoder(LargeADConfig(backbone="minkunet14"))
    SegmentationModel(enc, len(SYNTHETIC_CLASSES), class_names=SYNTHETIC_CLASSES).save_pretrained(
        folder, dataset="synthetic")
    return folder


PRETRAIN = [
    ("unknown config", ["--config", "no-such-config"], "neither a file nor one of training/configs"),
    ("unknown key", ["--config", "synthetic-tiny", "train.stepz=3"], "unknown key(s) 'train.stepz'"),
    ("mistyped value", ["--config", "synthetic-tiny", "train.batch_size=two"], "'train.batch_size' must be an integer"),
    ("bad override", ["--config", "synthetic-tiny", "optim.lr"], "must look like key=value"),
    ("missing root", ["--config", "minkunet34-seem-n", "data.0.root=/nonexistent/nuscenes",
                      "teacher.random_init=true"], "/nonexistent/nuscenes"),
    ("unknown split", ["--config", "synthetic-tiny", "data.0.split=trainval"], "trainval"),
    ("bad max steps", ["--config", "synthetic-tiny", "--max-steps", "0"], "--max-steps must be >= 1"),
]


@pytest.mark.parametrize("case, argv, needle", PRETRAIN, ids=[c[0] for c in PRETRAIN])
def test_pretrain_bad_input(tmp_path, capsys, monkeypatch, case, argv, needle):
    monkeypatch.setenv("LARGEAD_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    code, lines = _run(pretrain.cli, [*argv[:2], "--output-dir", str(out), *argv[2:]], capsys)
    assert code == 1 and len(lines) == 1 and lines[0].startswith("pretrain.py: error:"), lines
    assert needle in lines[0], lines[0]
    assert _tree(out) is None  # nothing written before the first step


FINETUNE = [
    ("missing weights", ["--pretrained", "/nonexistent/encoder"], "/nonexistent/encoder: no such directory"),
    ("unknown zoo name", ["--pretrained", "minkunet34-seem-nwk"], "Closest known names"),
    ("unpublished zoo entry", ["--pretrained", "largead/minkunet34-seem-nkw"], "not published yet"),
    ("unknown dataset", ["--dataset", "kitty"], "kitty"),
    ("unknown split", ["data.train_split=trainval"], "trainval"),
    ("bad label fraction", ["--label-fraction", "0"], "label"),
    ("unknown key", ["optim.lrr=0.1"], "optim.lrr"),
]


@pytest.mark.parametrize("case, argv, needle", FINETUNE, ids=[c[0] for c in FINETUNE])
def test_finetune_bad_input(tmp_path, capsys, monkeypatch, case, argv, needle):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    out = tmp_path / "run"
    base = ["--config", "linear-probe-synthetic", "--output-dir", str(out), f"data.options={TINY_WORLD}",
            "model.backbone=minkunet14"]
    code, lines = _run(finetune.cli, [*base, *argv], capsys)
    assert code == 1 and len(lines) == 1 and lines[0].startswith("finetune.py: error:"), lines
    assert needle in lines[0], lines[0]
    assert _tree(out) is None


EVALUATE = [
    ("missing model", lambda m, t: ["--model", str(t / "nowhere")], "nowhere"),
    ("not a segmentation model", lambda m, t: ["--model", str(t / "plain")], "segmentation.json"),
    ("unknown split", lambda m, t: ["--model", str(m), "--split", "valid"], "valid"),
    ("unknown corruption", lambda m, t: ["--model", str(m), "--corruptions", "rain"], "rain"),
    ("bad option", lambda m, t: ["--model", str(m), "--option", "beams"], "--option 'beams' must look like"),
    ("missing root", lambda m, t: ["--model", str(m), "--dataset", "semantickitti", "--root", str(t / "kitti")],
     "kitti"),
    ("unknown reader option", lambda m, t: ["--model", str(m), "--option", "num_sequence=1"],
     "did you mean 'num_sequences'"),
    ("bad batch size", lambda m, t: ["--model", str(m), "--batch-size", "0"], "--batch-size must be >= 1"),
]


@pytest.mark.parametrize("case, argv, needle", EVALUATE, ids=[c[0] for c in EVALUATE])
def test_evaluate_bad_input(tmp_path, capsys, segmentation_model, case, argv, needle):
    from largead.models.encoder import LargeADConfig, LargeADEncoder

    LargeADEncoder(LargeADConfig(backbone="minkunet14")).save_pretrained(tmp_path / "plain")
    before = _tree(segmentation_model)
    args = argv(segmentation_model, tmp_path)
    if "--dataset" not in args:  # the model's own synthetic world, kept tiny
        args += ["--option", "num_sequences=1", "--option", "frames_per_sequence=1"]
    code, lines = _run(evaluate.cli, args, capsys)
    assert code == 1 and len(lines) == 1 and lines[0].startswith("evaluate.py: error:"), lines
    assert needle in lines[0], lines[0]
    assert _tree(segmentation_model) == before  # no results written, the card untouched
