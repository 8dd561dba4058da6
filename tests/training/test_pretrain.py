"""End to end: `accelerate launch training/pretrain.py` on the tiny synthetic config (MinkUNet-34, a few hundred
voxels per scan). Exact resume, Hub-ready export, 2-process data sharding and replica equality, NaN guard,
changed-config refusal, and every shipped config parses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from largead.training import pretrain

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "training" / "pretrain.py"  # the launcher users run


def _launch(out: Path, *extra: str, procs: int = 1, cache: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LARGEAD_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    # accelerate's --cpu flag starts one process; several CPU processes go through --multi_gpu (torchrun, gloo)
    mode = "--cpu" if procs == 1 else "--multi_gpu"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", mode, "--num_processes", str(procs),
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", str(SCRIPT),
           "--config", "synthetic-tiny", "--output-dir", str(out), *extra]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, check=False)
    if check and res.returncode != 0:
        raise AssertionError(f"pretrain.py failed ({res.returncode}):\n{res.stderr[-4000:]}")
    return res


def _log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "losses.jsonl").read_text().splitlines()]


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("largead-cache")  # the synthetic teacher is trained once for the module


@pytest.mark.slow
def test_resume_matches_uninterrupted_and_exports_encoder(tmp_path, cache):
    full, split = tmp_path / "full", tmp_path / "split"
    common = ["train.steps=3", "train.checkpoint_every=2", "model.backbone=minkunet14"]  # the resume is the point
    _launch(full, *common, cache=cache)
    _launch(split, *common, "--max_steps", "2", cache=cache)  # the underscore alias of --max-steps
    assert [s for s in sorted(p.name for p in (split / "checkpoints").iterdir())] == ["checkpoint-2"]
    _launch(split, *common, cache=cache)  # --resume_from_checkpoint latest (default)
    a, b = _log(full), _log(split)
    assert [r["step"] for r in a] == [1, 2, 3] and [r["step"] for r in b] == [1, 2, 3]
    assert [r["samples"] for r in a] == [r["samples"] for r in b]  # same sample order after the resume
    np.testing.assert_allclose([r["loss"] for r in b], [r["loss"] for r in a], rtol=1e-5)
    wa, wb = _weights(full / "encoder"), _weights(split / "encoder")
    assert wa.keys() == wb.keys() and all(torch.allclose(wa[k], wb[k], rtol=1e-4, atol=1e-6) for k in wa)
    assert all(r["vfm"] > 0 and r["tmp"] > 0 and r["p2s"] > 0 for r in a)

    from largead import LargeADEncoder

    enc = LargeADEncoder.from_pretrained(full / "encoder")
    assert set(enc.config.input_norm) == {"synthetic"} and enc.config.input_norm["synthetic"][1] > 0
    pts = np.c_[np.random.default_rng(0).uniform(-10, 10, (100, 3)), np.full(100, 50.0)].astype(np.float32)
    feats = enc.embed(pts, dataset="synthetic")
    assert feats.shape == (100, 64) and torch.allclose(feats.norm(dim=1), torch.ones(100), atol=1e-4)
    card = (full / "encoder" / "README.md").read_text()
    assert "library_name: largead" in card and "synthetic" in card
    assert not [p for p in full.iterdir() if p.name.startswith(".")]  # no temporary export left behind

    # a changed config is refused, naming the key, and nothing is trained
    res = _launch(split, "train.steps=3", "train.checkpoint_every=2", "optim.lr=0.1", cache=cache, check=False)
    assert res.returncode != 0 and "optim.lr" in res.stderr and "--force" in res.stderr
    assert len(_log(split)) == 3


@pytest.mark.slow
def test_two_processes_shard_and_match_single_process(tmp_path, cache):
    one, two = tmp_path / "one", tmp_path / "two"
    # equal global batch 2: one process with 2 accumulated micro-batches vs two processes with one each
    _launch(one, "train.steps=1", "train.grad_accum=2", cache=cache)
    _launch(two, "train.steps=1", cache=cache, procs=2)
    a, b = _log(one)[0], _log(two)[0]
    p0, p1 = b["samples"]
    assert len(p0) == len(p1) == 1 and not set(p0) & set(p1)  # disjoint frames
    assert sorted(a["samples"][0]) == sorted(p0 + p1)  # the same frames as the single-process global batch
    assert b["replica_checksums"][0] == b["replica_checksums"][1]  # replicas identical after the step
    np.testing.assert_allclose(b["loss"], a["loss"], rtol=1e-4)
    wa, wb = _weights(one / "encoder"), _weights(two / "encoder")
    diffs = [float((wa[k] - wb[k]).abs().max()) for k in wa if wa[k].is_floating_point() and "running" not in k]
    assert max(diffs) < 1e-4


@pytest.mark.slow
def test_nan_loss_stops_without_saving(tmp_path, cache):
    out = tmp_path / "nan"
    # lr = inf: the first step is finite, the weights it produces are not -> step 2's loss is NaN
    res = _launch(out, "train.steps=3", "train.checkpoint_every=5", "optim.lr=.inf", cache=cache, check=False)
    assert res.returncode != 0 and "non-finite loss" in res.stderr and "at step 1" in res.stderr
    assert "no checkpoint was saved yet" in res.stderr
    assert not (out / "checkpoints").exists() or not list((out / "checkpoints").iterdir())
    assert not (out / "encoder").exists()


def test_every_shipped_config_parses():
    from largead.zoo import list_models

    configs = sorted(p for p in (ROOT / "training" / "configs").glob("*.yaml") if not p.name.startswith("_"))
    parsed = {p.stem: pretrain.load_pretrain_config(str(p)) for p in configs
              if p.stem.startswith(("minkunet34-", "synthetic"))}
    assert len(parsed) == 82
    zoo = {m.split("/", 1)[1] for m in list_models()} - {"minkunet34-random"}
    assert {n for n in parsed if n.startswith("minkunet34-")} == zoo
    nkw = parsed["minkunet34-seem-nkw"]
    assert [d.name for d in nkw.data] == ["nuscenes", "semantickitti", "waymo"] and nkw.normalize_inputs
    # DINOv2 teachers: SuperFlow's recipe (AdamW 0.01 for a global batch of 32, one-cycle, 100 epochs, 224 x 448)
    assert nkw.teacher.name == "vit-b" and nkw.superpixels.source == "seem"
    assert (nkw.optim.name, nkw.optim.lr, nkw.optim.base_batch_size, nkw.optim.scale_lr) == ("adamw", 0.01, 32, "none")
    assert nkw.optim.scheduler == "onecycle" and nkw.train.epochs == 100
    assert tuple(nkw.pipeline.augment.crop_size) == (224, 448)
    assert [(d.name, d.split, d.options["cameras"]) for d in nkw.data] == [
        ("nuscenes", "pretrain", True), ("semantickitti", "train", True), ("waymo", "train", True)]
    # ResNet-50: SLidR's recipe (SGD 0.5 for a global batch of 4) and its MoCo v2 file
    slic = parsed["minkunet34-slic-n-resnet50"]
    assert (slic.optim.name, slic.optim.lr, slic.optim.base_batch_size, slic.optim.scale_lr) == ("sgd", 0.5, 4, "none")
    assert slic.teacher.options["checkpoint"].endswith("moco_v2_800ep_pretrain.pth.tar")
    assert tuple(slic.pipeline.augment.crop_size) == (224, 416)
    for cfg in parsed.values():  # id 0's meaning comes from each superpixel source, never from a config
        assert cfg.pipeline.superpixel_ignore_zero is None
    assert subprocess.run([sys.executable, "-m", "largead.training.make_configs", "--check"],
                          capture_output=True, check=False).returncode == 0
    from largead.zoo import model_info

    for name, cfg in parsed.items():  # the encoder each config trains is its zoo entry's, field by field
        if name.startswith("minkunet34-"):
            assert cfg.model == model_info(name).config, name


def test_unknown_key_and_override_errors_name_the_file():
    from largead.config import ConfigError

    with pytest.raises(ConfigError, match=r"synthetic-tiny.yaml: unknown key\(s\) 'train.stepz'"):
        pretrain.load_pretrain_config("synthetic-tiny", ["train.stepz=3"])
    with pytest.raises(FileNotFoundError, match="neither a file nor one of training/configs"):
        pretrain.load_pretrain_config("no-such-config")


def test_calibration_error_miscalibrates_only_the_pairing_datasets():
    from largead.data import get_dataset
    from largead.data.geometry import rotation_angle

    cfg = pretrain.load_pretrain_config("synthetic-tiny", ["data.0.calibration_error=0.3"])
    d = cfg.data[0]
    clean = get_dataset(d.name, d.root, d.split, **d.options)
    (paired,) = pretrain.pairing_datasets(cfg, [clean])
    a, b = clean[0], paired[0]
    np.testing.assert_array_equal(a.points, b.points)
    for ca, cb in zip(a.cameras, b.cameras):
        np.testing.assert_array_equal(ca.image, cb.image)
        delta = cb.lidar_to_camera @ np.linalg.inv(ca.lidar_to_camera)
        assert np.degrees(rotation_angle(delta[:3, :3])) == pytest.approx(3.0, abs=1e-6)  # 0.3 x 10 degrees
        assert np.linalg.norm(delta[:3, 3]) == pytest.approx(0.15, abs=1e-6)  # 0.3 x 0.5 m
    (same,) = pretrain.pairing_datasets(pretrain.load_pretrain_config("synthetic-tiny"), [clean])
    assert same is clean
