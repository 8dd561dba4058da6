"""Pure-PyTorch sparse convolution engine with MinkowskiEngine 0.5.4 semantics and weight layout.

``SparseTensor`` holds features on integer coordinates; ``Conv3d`` / ``ConvTranspose3d`` / ``BatchNorm`` / ``ReLU`` /
``cat`` build MinkUNet-style networks whose state dicts use ME's keys and shapes. Kernel maps are built once per
forward pass and shared through a ``KernelMapCache``. Voxelisation (``batch_voxelize``) turns points into the
coordinates and features these layers take. ``largead.sparse.inference`` holds the inference fast path (precision
choice, BatchNorm folding, cached run-dtype weights); bfloat16/float16 products on CPU run in bucketed shapes
(``functional``).
"""

from .kernel_map import CoordinateSet, KernelMap, KernelMapCache, kernel_offsets
from .nn import BatchNorm, Conv3d, ConvTranspose3d, ReLU
from .tensor import SparseTensor, cat
from .voxelize import (
    FEATURE_MODES,
    MAX_VOXEL_COORD,
    VoxelBatch,
    VoxelGrid,
    batch_voxelize,
    feature_channels,
    in_range,
    input_features,
    point_features,
    quantize,
    unique_rows,
    voxelize,
)

__all__ = [
    "FEATURE_MODES",
    "MAX_VOXEL_COORD",
    "BatchNorm",
    "Conv3d",
    "ConvTranspose3d",
    "CoordinateSet",
    "KernelMap",
    "KernelMapCache",
    "ReLU",
    "SparseTensor",
    "VoxelBatch",
    "VoxelGrid",
    "batch_voxelize",
    "cat",
    "feature_channels",
    "in_range",
    "input_features",
    "kernel_offsets",
    "point_features",
    "quantize",
    "unique_rows",
    "voxelize",
]
