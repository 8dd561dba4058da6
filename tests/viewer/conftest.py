"""Shared fixtures of the viewer tests: a SemanticKITTI tree written in the official format, small models."""

from __future__ import annotations

import pytest
import torch

# tests/ is on sys.path (pytest puts the root conftest's folder there): the data tests' builders, one copy
from data.fixtures import make_frames, make_semantickitti_fixture

from largead import LargeADConfig, LargeADEncoder
from largead.data.labels import SEMANTICKITTI_CLASSES
from largead.models.heads import SegmentationModel

__all__ = ["make_frames"]


@pytest.fixture(scope="session")
def sk_tree(tmp_path_factory):
    """``(root, frames)``: sequence 08 with 3 scans of 2000 points, labels, poses, calib and image_2."""
    root = tmp_path_factory.mktemp("semantickitti")
    frames = make_semantickitti_fixture(root, sequences=("08",), frames_per_sequence=3, num_points=2000)
    return root, frames


@pytest.fixture(scope="session")
def sk_scan(sk_tree):
    return sk_tree[0] / "sequences" / "08" / "velodyne" / "000000.bin"


@pytest.fixture(scope="session")
def encoder_dir(tmp_path_factory):
    """A randomly initialised MinkUNet-14 encoder (16-d output) written with save_pretrained."""
    folder = tmp_path_factory.mktemp("encoder")
    torch.manual_seed(0)
    LargeADEncoder(LargeADConfig(backbone="minkunet14", out_channels=16)).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def segmentation_dir(tmp_path_factory):
    """A fine-tuned-style segmentation model (random weights, 19 SemanticKITTI classes) as training/finetune.py
    writes it: SegmentationModel.save_pretrained with the dataset it was trained on."""
    folder = tmp_path_factory.mktemp("segmentation")
    torch.manual_seed(1)
    encoder = LargeADEncoder(LargeADConfig(backbone="minkunet14", out_channels=16,
                                           input_norm={"semantickitti": (0.5, 0.29)}))
    model = SegmentationModel(encoder, len(SEMANTICKITTI_CLASSES), mode="finetune", class_names=SEMANTICKITTI_CLASSES)
    model.save_pretrained(folder, dataset="semantickitti", input_norm_key="semantickitti")
    return folder
