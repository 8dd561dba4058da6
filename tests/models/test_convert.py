"""Official (SLidR/Seal) checkpoint loading and the convert_checkpoint script, on files written in their layouts."""

from __future__ import annotations

import json
import re

import pytest
import torch
from script_modules import load_script

from largead import LargeADConfig, LargeADEncoder, load_official_checkpoint
from largead.models.convert import strip_prefixes
from largead.models.encoder import CheckpointMismatchError
from largead.models.minkunet import MinkUNet

SLIDR_CONFIG = {"dataset": "nuscenes", "cylindrical_coordinates": True, "voxel_size": 0.1, "kernel_size": 3,
                "model_n_out": 64, "bn_momentum": 0.05, "normalize_features": True, "superpixels_type": "slic"}


def random_state(variant: str = "minkunet14", c_in: int = 1, c_out: int = 64, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    net = MinkUNet(c_in, c_out, variant)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2.0)
                m.weight.normal_()
                m.num_batches_tracked.fill_(123)
    return net.state_dict()


def prefixed(state: dict, prefix: str) -> dict:
    return {prefix + k: v for k, v in state.items()}


def assert_same_weights(encoder: LargeADEncoder, state: dict) -> None:
    got = encoder.state_dict()
    assert list(got) == list(state)
    for k, v in state.items():
        assert torch.equal(got[k], v), k


LAYOUTS = {
    "slidr_pretraining": lambda s: {"model_points": s, "model_images": {"head.weight": torch.zeros(2)}, "epoch": 49,
                                    "config": SLIDR_CONFIG},
    "slidr_pretraining_multigpu": lambda s: {"model_points": prefixed(s, "module."), "epoch": 1,
                                             "config": SLIDR_CONFIG},
    "lightning_pretraining": lambda s: {"state_dict": {**prefixed(s, "model_points."),
                                                       "model_images.decoder.0.weight": torch.zeros(2)},
                                        "epoch": 3, "global_step": 10},
    "lightning_downstream": lambda s: {"state_dict": prefixed(s, "model."), "epoch": 3},
    "nested_prefixes": lambda s: {"state_dict": prefixed(s, "module.model.encoder.")},
    "bare": lambda s: dict(s),
    "bare_module": lambda s: prefixed(s, "module."),
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_layouts_load_exactly(layout, tmp_path):
    state = random_state()
    path = tmp_path / "model.pt"
    torch.save(LAYOUTS[layout](state), path)
    enc = load_official_checkpoint(path)
    assert enc.config.backbone == "minkunet14"
    assert (enc.config.in_channels, enc.config.out_channels) == (1, 64)
    assert enc.config.voxel_size == (0.1, 1.0, 0.1) and enc.config.cylindrical
    assert enc.config.normalize_output and not enc.training
    assert_same_weights(enc, state)


def test_minkunet34_slidr_file(tmp_path):
    state = random_state("minkunet34")
    path = tmp_path / "minkunet_slidr_1gpu.pt"
    torch.save({"model_points": state, "epoch": 49, "config": SLIDR_CONFIG}, path)
    enc = load_official_checkpoint(path)
    assert enc.config.backbone == "minkunet34" and enc.config.bn_momentum == 0.05
    assert_same_weights(enc, state)


def test_finetuned_17_class_checkpoint_infers_channels(tmp_path):
    state = random_state(c_out=17)
    path = tmp_path / "finetuned.ckpt"
    torch.save({"state_dict": prefixed(state, "model."), "epoch": 99}, path)
    enc = load_official_checkpoint(path)
    assert (enc.config.in_channels, enc.config.out_channels) == (1, 17)
    assert not enc.config.normalize_output  # a classifier, not a projection head
    assert_same_weights(enc, state)


def test_four_channel_checkpoint(tmp_path):
    state = random_state(c_in=4, c_out=64)
    torch.save(state, tmp_path / "m.pt")
    enc = load_official_checkpoint(tmp_path / "m.pt")
    assert enc.config.in_channels == 4 and enc.config.feature_mode == "xyz_intensity"


def test_missing_key_is_named(tmp_path):
    state = random_state()
    del state["block2.0.norm1.bn.running_var"]
    torch.save({"model_points": state}, tmp_path / "m.pt")
    with pytest.raises(CheckpointMismatchError, match=r"missing keys \(1\): block2.0.norm1.bn.running_var"):
        load_official_checkpoint(tmp_path / "m.pt")


def test_unknown_layout_and_non_minkunet(tmp_path):
    torch.save({"weights": {"a": torch.zeros(1)}, "epoch": 1}, tmp_path / "a.pt")
    with pytest.raises(CheckpointMismatchError, match=r"no 'model_points' or 'state_dict'.*\['epoch', 'weights'\]"):
        load_official_checkpoint(tmp_path / "a.pt")
    torch.save({"state_dict": {"backbone.conv1.weight": torch.zeros(3, 3)}}, tmp_path / "b.pt")
    with pytest.raises(CheckpointMismatchError, match="no 'conv0p1s1.kernel'; not a MinkUNet"):
        load_official_checkpoint(tmp_path / "b.pt")
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        load_official_checkpoint(tmp_path / "c.pt")


def test_voxel_config_checked_against_request(tmp_path):
    state = random_state()
    stored = {**SLIDR_CONFIG, "cylindrical_coordinates": False, "voxel_size": 0.05}
    torch.save({"model_points": state, "config": stored}, tmp_path / "m.pt")
    enc = load_official_checkpoint(tmp_path / "m.pt")  # grid taken from the file
    assert enc.config.voxel_size == (0.05, 0.05, 0.05) and not enc.config.cylindrical
    wanted = LargeADConfig(backbone="minkunet14")  # SLidR's cylindrical default
    with pytest.raises(ValueError, match=r"voxel_size=\(0.05, 0.05, 0.05\), cylindrical=False.*"
                                         r"voxel_size=\(0.1, 1.0, 0.1\), cylindrical=True"):
        load_official_checkpoint(tmp_path / "m.pt", wanted)
    ok = LargeADConfig(backbone="minkunet14", voxel_size=(0.05, 0.05, 0.05), cylindrical=False)
    assert_same_weights(load_official_checkpoint(tmp_path / "m.pt", ok), state)


def test_requested_config_with_other_architecture_fails_strictly(tmp_path):
    torch.save(random_state(), tmp_path / "m.pt")
    with pytest.raises(CheckpointMismatchError, match="missing keys"):
        load_official_checkpoint(tmp_path / "m.pt", LargeADConfig(backbone="minkunet18"))


def test_strip_prefixes_collision():
    with pytest.raises(CheckpointMismatchError, match="collide"):
        strip_prefixes({"module.final.bias": torch.zeros(1), "final.bias": torch.zeros(1)})


def test_convert_script_writes_hub_folder(tmp_path, capsys):
    state = random_state(c_out=20)
    torch.save({"state_dict": prefixed(state, "module.model.")}, tmp_path / "kitti.pt")
    assert load_script("convert_checkpoint").main([str(tmp_path / "kitti.pt"), str(tmp_path / "out")]) == 0
    assert "in=1, out=20" in capsys.readouterr().out
    cfg = json.loads((tmp_path / "out" / "config.json").read_text())
    assert cfg["out_channels"] == 20 and cfg["backbone"] == "minkunet14"
    assert_same_weights(LargeADEncoder.from_pretrained(tmp_path / "out"), state)
    torch.save({"model_points": {"final.kernel": torch.zeros(96, 2)}}, tmp_path / "bad.pt")
    assert load_script("convert_checkpoint").main([str(tmp_path / "bad.pt"), str(tmp_path / "out2")]) == 1
    assert "conv0p1s1.kernel" in capsys.readouterr().err
    assert not (tmp_path / "out2").exists()


class _Marker:
    """A pickle that would write a file when loaded with weights_only=False."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _write_bad(kind: str, path):
    import zipfile

    if kind == "text":
        path.write_text("hello world\n")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        torch.save({"model_points": random_state()}, path)
        path.write_bytes(path.read_bytes()[:2000])
    elif kind == "zip without data":
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("x.txt", "no tensors")
    elif kind == "pickled code":
        torch.save({"model_points": _Marker(path.with_suffix(".marker"))}, path)
    elif kind == "list":
        torch.save([1, 2, 3], path)
    elif kind == "no tensors":
        torch.save({"model_points": {"conv0p1s1.kernel": "not a tensor"}}, path)
    elif kind == "wrong shape":
        state = random_state()
        state["final.bias"] = torch.zeros(1, 7)
        state["final.kernel"] = torch.zeros(96, 8)
        torch.save({"model_points": state}, path)


@pytest.mark.parametrize("kind, match", [
    ("text", "not a PyTorch checkpoint"),
    ("empty", "not a PyTorch checkpoint"),
    ("truncated", "not a PyTorch checkpoint"),
    ("zip without data", "not a PyTorch checkpoint"),
    ("pickled code", "cannot be read with weights_only=True"),
    ("list", "expected a dict, got list"),
    ("no tensors", "is not a dict of tensors"),
    ("wrong shape", r"wrong shapes \(1\): final.bias"),
])
def test_bad_checkpoint_files_are_named_in_one_line(tmp_path, kind, match):
    path = tmp_path / "bad.pt"
    _write_bad(kind, path)
    with pytest.raises((CheckpointMismatchError, ValueError)) as err:
        load_official_checkpoint(path)
    message = str(err.value)
    assert str(path) in message and "\n" not in message, message
    assert re.search(match, message), message
    assert not path.with_suffix(".marker").exists()  # no code ran
