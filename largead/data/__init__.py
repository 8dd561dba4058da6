"""Data layer: one frame model, readers for each dataset, geometry, synthetic world, label fractions."""

from largead.data.frame import IGNORE_INDEX, CameraView, Frame
from largead.data.registry import LidarDataset, dataset_class, get_dataset, list_datasets, register_dataset

__all__ = [
    "IGNORE_INDEX",
    "CameraView",
    "Frame",
    "LidarDataset",
    "dataset_class",
    "get_dataset",
    "list_datasets",
    "register_dataset",
]
