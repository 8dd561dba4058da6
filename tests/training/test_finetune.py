"""training/finetune.py: configs parse, errors, and a tiny end-to-end linear probe + fine-tune on synthetic data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from largead.config import ConfigError
from largead.models.heads import SegmentationModel
from largead.trainer import list_checkpoints
from largead.training import CONFIG_DIR as CONFIGS
from largead.training import finetune

TINY = ["data.options={num_sequences: 2, frames_per_sequence: 2, num_cameras: 1, beams: 16, azimuth_resolution: 2.0}",
        "model.backbone=minkunet14", "batch_size=2", "epochs=1", "checkpointing_steps=1"]


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("*.yaml")
                                        if p.name.startswith(("finetune-", "linear-probe-"))))
def test_every_config_parses(name: str) -> None:
    cfg = finetune.load_run_config(finetune.parse_args(["--config", str(CONFIGS / name), "--output_dir", "x"]))
    assert cfg.optim.momentum == 0.9 and cfg.optim.dampening == 0.1 and cfg.optim.weight_decay == 1e-4
    assert cfg.optim.scheduler == "cosine" and cfg.model.bn_momentum == 0.02 and cfg.lovasz_weight == 1.0
    if name.startswith("linear-probe"):
        assert cfg.mode == "linear_probe" and cfg.optim.lr == 0.05 and cfg.head_lr is None
    else:
        assert cfg.mode == "finetune" and cfg.head_lr == 2.0
    if name == "finetune-nuscenes.yaml":
        assert (cfg.optim.lr, cfg.batch_size, cfg.epochs) == (0.02, 16, 100)
    if name == "finetune-semantickitti.yaml":
        assert (cfg.optim.lr, cfg.batch_size, cfg.data.name) == (0.05, 10, "semantickitti")


def test_cli_overrides_and_bad_keys() -> None:
    args = finetune.parse_args(["--output_dir", "x", "--pretrained", "none", "--label_fraction", "25",
                                "--mode", "linear_probe", "optim.lr=0.1"])
    cfg = finetune.load_run_config(args)
    assert cfg.pretrained is None and cfg.data.label_fraction == 25 and cfg.mode == "linear_probe"
    assert cfg.optim.lr == 0.1
    with pytest.raises(ConfigError, match="optim.lrr"):
        finetune.load_run_config(finetune.parse_args(["--output_dir", "x", "optim.lrr=0.1"]))


def test_zero_frame_fraction_and_unlabelled_split_are_refused() -> None:
    from largead.data.frame import Frame
    from largead.data.registry import LidarDataset

    class Scenes(LidarDataset):
        """Three scenes of two frames, label fractions by scene (like nuScenes)."""

        name = "scenes"
        label_fraction_unit = "sequence"

        def __len__(self) -> int:
            return 6

        def frame(self, i: int) -> Frame:
            return Frame(points=np.zeros((3, 4), np.float32), sequence=f"s{i // 2}")

        def sequence_of(self, i: int) -> tuple[str, int]:
            return f"s{i // 2}", i % 2

    assert finetune.training_indices(Scenes(), 50).tolist() == [2, 3]  # every 2nd scene: the second one
    with pytest.raises(ValueError, match="keeps none"):
        finetune.training_indices(Scenes(), 1)  # every 100th of 3 scenes: none
    with pytest.raises(ValueError, match="no semantic labels for split 'train'"):
        finetune.check_labelled(Scenes(), "train")


def test_refuses_pretrained_with_other_voxelisation(tmp_path: Path) -> None:
    from largead.models.encoder import LargeADConfig, LargeADEncoder

    LargeADEncoder(LargeADConfig(backbone="minkunet14", voxel_size=(0.05, 0.05, 0.05), cylindrical=False)
                   ).save_pretrained(tmp_path / "enc")
    cfg = finetune.load_run_config(finetune.parse_args(["--output_dir", "x", *TINY]))
    cfg.pretrained = str(tmp_path / "enc")
    with pytest.raises(ValueError, match="voxel_size=\\(0.05, 0.05, 0.05\\), cylindrical=False but the synthetic"):
        finetune.build_encoder(cfg)


@pytest.mark.slow
def test_tiny_linear_probe_end_to_end_and_resume(tmp_path: Path) -> None:
    from largead.models.encoder import LargeADConfig, LargeADEncoder

    torch.manual_seed(0)
    pre = LargeADEncoder(LargeADConfig(backbone="minkunet14"))
    pre.save_pretrained(tmp_path / "pre")
    out = tmp_path / "run"
    args = ["--config", str(CONFIGS / "linear-probe-synthetic.yaml"), "--output_dir", str(out),
            "--pretrained", str(tmp_path / "pre"), *TINY]
    final = finetune.main(finetune.parse_args(args))
    assert [s for s, _ in list_checkpoints(out)] == [2]  # 4 frames / batch 2 = 2 steps; total_limit 1 at the end
    model = SegmentationModel.from_pretrained(final)
    assert model.mode == "linear_probe" and model.class_names[0] == "road"
    meta = json.loads((final / "segmentation.json").read_text())
    assert meta["dataset"] == "synthetic" and meta["label_fraction"] == 100 and meta["steps"] == 2
    trained = model.encoder.state_dict()
    for k, v in pre.state_dict().items():  # backbone (weights and BN statistics) untouched, head new
        if not k.startswith("final."):
            assert torch.equal(v, trained[k]), k
    log = [json.loads(ln) for ln in (out / "losses.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2] and all(r["loss"] > 0 for r in log)
    # rerunning a finished run trains nothing, rewrites nothing and says so
    stamp = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    code, stdout = _cli(args)
    assert code == 0 and f"linear_probe in {out} already finished at step 2 of 2; nothing to do" in stdout
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == stamp
    again_state = SegmentationModel.from_pretrained(final).encoder.state_dict()
    assert all(torch.equal(again_state[k], trained[k]) for k in trained)


def _cli(argv: list[str]) -> tuple[int, str]:
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        try:
            finetune.cli(argv)
        except SystemExit as exit_:
            return exit_.code, buf.getvalue()
    raise AssertionError("cli() did not exit")


@pytest.mark.slow
def test_diverging_probe_fails_without_writing_a_model(tmp_path: Path, capsys) -> None:
    """The divergence check end to end (the rule itself, with the issue's 4954 -> 2.75e6 probe, is tested in
    tests/test_trainer.py): a factor so small that any loss exceeds it makes every run "diverge"."""
    out = tmp_path / "run"
    args = ["--config", str(CONFIGS / "linear-probe-synthetic.yaml"), "--output_dir", str(out), "--pretrained",
            "none", *TINY, "divergence_factor=1.0e-9"]
    code, _ = _cli(args)
    err = capsys.readouterr().err
    (line,) = [ln for ln in err.splitlines() if ": error: " in ln]
    assert code == 1 and "finetune.py: error: linear_probe diverged: the loss went from " in line
    assert "the final model is not written, so no metric is computed from it" in line
    assert not (out / "model").exists() and not (out / "summary.json").exists()
    assert [s for s, _ in list_checkpoints(out)] == [1, 2]  # kept for inspection (2 while a run is live)
    # the check disabled: the same run writes its model; total_limit 0 drops the checkpoints of a finished run
    code, _ = _cli([*args[:-1], "divergence_factor=null", "total_limit=0", "--force"])
    assert code == 0 and (out / "model" / "segmentation.json").is_file() and list_checkpoints(out) == []
    code, stdout = _cli([*args[:-1], "divergence_factor=null", "total_limit=0"])
    assert code == 0 and "already finished at step 2 of 2; nothing to do" in stdout


@pytest.mark.slow
def test_tiny_finetune_changes_backbone(tmp_path: Path) -> None:
    from largead.models.encoder import LargeADConfig, LargeADEncoder

    pre = LargeADEncoder(LargeADConfig(backbone="minkunet14"))
    pre.save_pretrained(tmp_path / "pre")
    final = finetune.main(finetune.parse_args(["--config", str(CONFIGS / "finetune-synthetic.yaml"),
                                               "--output_dir", str(tmp_path / "ft"), "--pretrained",
                                               str(tmp_path / "pre"), "max_steps=1", *TINY]))
    model = SegmentationModel.from_pretrained(final)
    assert model.mode == "finetune" and model.num_classes == 12
    assert json.loads((final / "segmentation.json").read_text())["steps"] == 1
    state = model.encoder.state_dict()
    assert not torch.equal(state["conv0p1s1.kernel"], pre.state_dict()["conv0p1s1.kernel"])
    assert state["bn0.bn.num_batches_tracked"] == 1


def test_transfer_estimates_the_unseen_dataset_s_statistics_and_stores_them(tmp_path: Path, capsys) -> None:
    from largead.data.registry import get_dataset
    from largead.data.splits import label_fraction_indices
    from largead.models.encoder import LargeADConfig, LargeADEncoder
    from largead.pretrain.multisource import dataset_intensity_stats

    torch.manual_seed(0)
    pre = LargeADEncoder(LargeADConfig(backbone="minkunet14", input_norm={"nuscenes": (127.5, 60.0)}))
    pre.save_pretrained(tmp_path / "pre")
    with pytest.raises(KeyError, match="no input statistics for dataset 'synthetic'.*fine-tune it there"):
        pre.embed(np.zeros((10, 4), np.float32), dataset="synthetic")
    args = ["--config", str(CONFIGS / "linear-probe-synthetic.yaml"), "--output-dir", str(tmp_path / "run"),
            "--pretrained", str(tmp_path / "pre"), *TINY, "max_steps=1"]
    final = finetune.main(finetune.parse_args(args))
    assert "no input statistics for 'synthetic'" in capsys.readouterr().err
    model = SegmentationModel.from_pretrained(final)
    cfg = finetune.load_run_config(finetune.parse_args(args))
    train = get_dataset("synthetic", None, "train", **cfg.data.options)
    expected = dataset_intensity_stats(train, cfg.data.norm_frames, label_fraction_indices(train, 100))
    assert model.encoder.config.input_norm["nuscenes"] == (127.5, 60.0)  # the pretraining statistics are kept
    np.testing.assert_allclose(model.encoder.config.input_norm["synthetic"], expected, rtol=1e-12)
    scan = train[0].points[:, :4].astype(np.float32)
    batch = model.encoder.voxelize(scan, dataset="synthetic")  # the fine-tuned model embeds its own dataset
    torch.testing.assert_close(batch.feats[:, 0].mean().double(), torch.tensor(
        ((scan[batch.first_index.numpy(), 3] - expected[0]) / expected[1]).mean(), dtype=torch.float64),
        rtol=1e-5, atol=1e-6)
