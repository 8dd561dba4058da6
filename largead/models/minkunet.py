"""MinkUNet: SLidR's ``Res16UNet`` family (the LiDAR backbone of SLidR, Seal and LargeAD) on ``largead.sparse``.

Architecture facts (valeoai/SLidR ``model/res16unet.py``, ``model/resnet.py``, ``model/modules/resnet_block.py``;
NVIDIA/MinkowskiEngine ``examples/minkunet.py``):

- stem ``conv0p1s1`` (3^3, stride 1) + ``bn0`` + ReLU;
- four encoder stages ``conv{1..4}p{1,2,4,8}s2`` (kernel 2, stride 2) + ``bn{1..4}`` + ReLU + ``block{1..4}``;
- four decoder stages ``convtr{4..7}p{16,8,4,2}s2`` (transposed, kernel 2, stride 2) + ``bntr{4..7}`` + ReLU, then the
  features are concatenated ``[upsampled, skip]`` with the encoder output of the same resolution (block3, block2,
  block1, the stem) and go through ``block{5..8}``;
- ``final``: a 1x1 convolution with bias to ``out_channels`` (the projection head in pretraining, the classifier in
  fine-tuning).
- A stage is ``nn.Sequential`` of residual blocks (``BasicBlock``: 3^3 conv, BN, ReLU, 3^3 conv, BN, + residual,
  ReLU; ``Bottleneck``: 1x1, 3^3, 1x1 with expansion 4). The first block of a stage gets a ``downsample`` residual
  (1x1 conv + BN, as ``nn.Sequential`` so its keys are ``downsample.0`` / ``downsample.1``) when its input width
  differs from ``planes * expansion``.

Variants (``MINKUNET_VARIANTS``): ``minkunet14/18/34`` use ``BasicBlock`` with LAYERS (1,)*8, (2,)*8 and
(2, 3, 4, 6, 2, 2, 2, 2); ``minkunet50`` uses ``Bottleneck`` with the LAYERS of 34. All four use the PLANES of SLidR's
``Res16UNet34C``, (32, 64, 128, 256, 256, 128, 96, 96), and INIT_DIM 32 (our choice for 14/18/50: ME's example names
several PLANES per depth, SLidR uses only 34C). ``minkunet34`` with in=1, out=64 has exactly the 374 state-dict entries
(37.8 M parameters) of SLidR's checkpoints. For ``minkunet50`` the input width of ``final`` is
``PLANES[7] * expansion`` (384), as in MinkowskiEngine's ``examples/minkunet.py`` since v0.5 (its 0.4 version, and
SLidR's ``model/res16unet.py``, which only builds BasicBlock networks, pass ``PLANES[7]``; for BasicBlock the two
agree, expansion being 1).

BatchNorm momentum: SLidR passes its ``bn_momentum`` (0.05 pretraining, 0.02 fine-tuning) to the stem, encoder,
decoder and ``downsample`` BatchNorms only; BatchNorms inside the residual blocks keep PyTorch's default 0.1 because
``_make_layer`` does not forward it. We reproduce that by default (``block_bn_momentum=0.1``) so training dynamics
match the published checkpoints; pass ``block_bn_momentum=None`` to use ``bn_momentum`` everywhere. BN weights start
at 1 and biases at 0; convolutions use MinkowskiEngine's uniform initialisation.

The layers come from a :class:`SparseOps` backend: :data:`TORCH_OPS` (``largead.sparse``, the default) or
``largead.models.minkowski.MINKOWSKI_OPS`` (MinkowskiEngine). Parameter names and shapes do not depend on the
backend, so state dicts are interchangeable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn

from largead.sparse import BatchNorm, Conv3d, ConvTranspose3d, ReLU, SparseTensor, cat
from largead.sparse.nn import residual_add


@dataclass(frozen=True)
class MinkUNetSpec:
    """Depth and widths of one MinkUNet variant (``block`` is ``"basic"`` or ``"bottleneck"``)."""

    block: str
    layers: tuple[int, int, int, int, int, int, int, int]
    planes: tuple[int, int, int, int, int, int, int, int] = (32, 64, 128, 256, 256, 128, 96, 96)
    init_dim: int = 32

    @property
    def expansion(self) -> int:
        """Output width of a block divided by its ``planes`` (1 for BasicBlock, 4 for Bottleneck)."""
        return 4 if self.block == "bottleneck" else 1


MINKUNET_VARIANTS: dict[str, MinkUNetSpec] = {
    "minkunet14": MinkUNetSpec("basic", (1, 1, 1, 1, 1, 1, 1, 1)),
    "minkunet18": MinkUNetSpec("basic", (2, 2, 2, 2, 2, 2, 2, 2)),
    "minkunet34": MinkUNetSpec("basic", (2, 3, 4, 6, 2, 2, 2, 2)),
    "minkunet50": MinkUNetSpec("bottleneck", (2, 3, 4, 6, 2, 2, 2, 2)),
}


def get_spec(variant: str) -> MinkUNetSpec:
    """The :class:`MinkUNetSpec` of ``variant``; ValueError listing the known names otherwise."""
    try:
        return MINKUNET_VARIANTS[variant]
    except KeyError:
        raise ValueError(f"unknown MinkUNet variant {variant!r}; known: {', '.join(MINKUNET_VARIANTS)}") from None


class SparseOps(Protocol):
    """The sparse layers a backend provides; each returns a module (or performs an op) on its own tensor type."""

    name: str

    def conv(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
             bias: bool = False) -> nn.Module: ...

    def conv_transpose(self, in_channels: int, out_channels: int) -> nn.Module: ...

    def batch_norm(self, channels: int, momentum: float) -> nn.Module: ...

    def relu(self) -> nn.Module: ...

    def cat(self, a: Any, b: Any) -> Any: ...

    def add(self, a: Any, b: Any) -> Any: ...

    def sparse_input(self, coords: torch.Tensor, feats: torch.Tensor) -> Any:
        """The backend's sparse tensor for unique voxel ``coords`` (M, 4) and ``feats`` (M, C) at stride 1."""
        ...

    def output_features(self, out: Any, inp: Any) -> torch.Tensor:
        """Features (M, C) of ``out`` (on the coordinates of ``inp``) in the row order of ``inp``'s ``coords``."""
        ...


class TorchOps:
    """``largead.sparse`` layers (pure PyTorch, CPU or CUDA)."""

    name = "torch"

    def conv(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
             bias: bool = False) -> nn.Module:
        return Conv3d(in_channels, out_channels, kernel_size=kernel_size, stride=stride, bias=bias)

    def conv_transpose(self, in_channels: int, out_channels: int) -> nn.Module:
        return ConvTranspose3d(in_channels, out_channels, kernel_size=2, stride=2)

    def batch_norm(self, channels: int, momentum: float) -> nn.Module:
        return BatchNorm(channels, momentum=momentum)

    def relu(self) -> nn.Module:
        return ReLU()

    def cat(self, a: SparseTensor, b: SparseTensor) -> SparseTensor:
        return cat(a, b)

    def add(self, a: SparseTensor, b: SparseTensor) -> SparseTensor:
        return residual_add(a, b)

    def sparse_input(self, coords: torch.Tensor, feats: torch.Tensor) -> SparseTensor:
        return SparseTensor(feats, coords)

    def output_features(self, out: SparseTensor, inp: SparseTensor) -> torch.Tensor:
        if out.coordinate_set is not inp.coordinate_set:
            raise ValueError("network output is not on the input coordinates")
        return out.F


TORCH_OPS = TorchOps()


class BasicBlock(nn.Module):
    """Two 3^3 convolutions with BN, ReLU in between, plus the (optionally projected) input, then ReLU."""

    expansion = 1

    def __init__(self, ops: SparseOps, inplanes: int, planes: int, downsample: nn.Module | None,
                 bn_momentum: float) -> None:
        super().__init__()
        self._ops = ops
        self.conv1 = ops.conv(inplanes, planes, 3)
        self.norm1 = ops.batch_norm(planes, bn_momentum)
        self.conv2 = ops.conv(planes, planes, 3)
        self.norm2 = ops.batch_norm(planes, bn_momentum)
        self.relu = ops.relu()
        self.downsample = downsample

    def forward(self, x: Any) -> Any:
        out = self.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        residual = x if self.downsample is None else self.downsample(x)
        return self.relu(self._ops.add(out, residual))


class Bottleneck(nn.Module):
    """1x1 (planes) -> 3^3 (planes) -> 1x1 (4 * planes) with BN, ReLU, plus the residual, then ReLU."""

    expansion = 4

    def __init__(self, ops: SparseOps, inplanes: int, planes: int, downsample: nn.Module | None,
                 bn_momentum: float) -> None:
        super().__init__()
        self._ops = ops
        self.conv1 = ops.conv(inplanes, planes, 1)
        self.norm1 = ops.batch_norm(planes, bn_momentum)
        self.conv2 = ops.conv(planes, planes, 3)
        self.norm2 = ops.batch_norm(planes, bn_momentum)
        self.conv3 = ops.conv(planes, planes * self.expansion, 1)
        self.norm3 = ops.batch_norm(planes * self.expansion, bn_momentum)
        self.relu = ops.relu()
        self.downsample = downsample

    def forward(self, x: Any) -> Any:
        out = self.relu(self.norm1(self.conv1(x)))
        out = self.relu(self.norm2(self.conv2(out)))
        out = self.norm3(self.conv3(out))
        residual = x if self.downsample is None else self.downsample(x)
        return self.relu(self._ops.add(out, residual))


_BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}


class MinkUNet(nn.Module):
    """SLidR's Res16UNet (MinkowskiEngine key layout) on a pluggable sparse backend.

    Args:
        in_channels: input feature channels per voxel (1 for intensity).
        out_channels: channels of ``final`` (64 in pretraining; the number of classes when fine-tuning).
        variant: one of :data:`MINKUNET_VARIANTS`.
        bn_momentum: momentum of the stem, encoder, decoder and ``downsample`` BatchNorms.
        block_bn_momentum: momentum of the BatchNorms inside residual blocks (0.1 reproduces SLidR); ``None`` uses
            ``bn_momentum``.
        ops: the layer backend (:data:`TORCH_OPS` by default).

    ``forward(x)`` takes a sparse tensor of the backend at stride 1 with ``in_channels`` features and returns the
    output of ``final`` on the same coordinates; :meth:`decoder_features` stops before ``final``.
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 64, variant: str = "minkunet34",
                 bn_momentum: float = 0.05, block_bn_momentum: float | None = 0.1,
                 ops: SparseOps | None = None) -> None:
        super().__init__()
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"in_channels and out_channels must be >= 1, got {in_channels}, {out_channels}")
        spec = get_spec(variant)
        ops = TORCH_OPS if ops is None else ops
        self._ops = ops
        self.variant = variant
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        block = _BLOCKS[spec.block]
        exp = block.expansion
        planes, layers = spec.planes, spec.layers
        inner_momentum = bn_momentum if block_bn_momentum is None else block_bn_momentum

        def stage(inplanes: int, width: int, depth: int) -> nn.Sequential:
            downsample = None
            if inplanes != width * exp:
                downsample = nn.Sequential(ops.conv(inplanes, width * exp, 1),
                                           ops.batch_norm(width * exp, bn_momentum))
            blocks = [block(ops, inplanes, width, downsample, inner_momentum)]
            blocks += [block(ops, width * exp, width, None, inner_momentum) for _ in range(1, depth)]
            return nn.Sequential(*blocks)

        d = spec.init_dim
        self.conv0p1s1 = ops.conv(in_channels, d, 3)
        self.bn0 = ops.batch_norm(d, bn_momentum)
        self.conv1p1s2 = ops.conv(d, d, 2, stride=2)
        self.bn1 = ops.batch_norm(d, bn_momentum)
        self.block1 = stage(d, planes[0], layers[0])
        self.conv2p2s2 = ops.conv(planes[0] * exp, planes[0] * exp, 2, stride=2)
        self.bn2 = ops.batch_norm(planes[0] * exp, bn_momentum)
        self.block2 = stage(planes[0] * exp, planes[1], layers[1])
        self.conv3p4s2 = ops.conv(planes[1] * exp, planes[1] * exp, 2, stride=2)
        self.bn3 = ops.batch_norm(planes[1] * exp, bn_momentum)
        self.block3 = stage(planes[1] * exp, planes[2], layers[2])
        self.conv4p8s2 = ops.conv(planes[2] * exp, planes[2] * exp, 2, stride=2)
        self.bn4 = ops.batch_norm(planes[2] * exp, bn_momentum)
        self.block4 = stage(planes[2] * exp, planes[3], layers[3])

        self.convtr4p16s2 = ops.conv_transpose(planes[3] * exp, planes[4])
        self.bntr4 = ops.batch_norm(planes[4], bn_momentum)
        self.block5 = stage(planes[4] + planes[2] * exp, planes[4], layers[4])
        self.convtr5p8s2 = ops.conv_transpose(planes[4] * exp, planes[5])
        self.bntr5 = ops.batch_norm(planes[5], bn_momentum)
        self.block6 = stage(planes[5] + planes[1] * exp, planes[5], layers[5])
        self.convtr6p4s2 = ops.conv_transpose(planes[5] * exp, planes[6])
        self.bntr6 = ops.batch_norm(planes[6], bn_momentum)
        self.block7 = stage(planes[6] + planes[0] * exp, planes[6], layers[6])
        self.convtr7p2s2 = ops.conv_transpose(planes[6] * exp, planes[7])
        self.bntr7 = ops.batch_norm(planes[7], bn_momentum)
        self.block8 = stage(planes[7] + d, planes[7], layers[7])

        self.decoder_channels = planes[7] * exp
        self.final = ops.conv(self.decoder_channels, out_channels, 1, bias=True)
        self.relu = ops.relu()
        self.reset_batchnorm()

    @property
    def backend(self) -> str:
        """Name of the sparse backend the layers come from (``"torch"`` or ``"minkowski"``)."""
        return self._ops.name

    def reset_batchnorm(self) -> None:
        """BatchNorm weights to 1, biases to 0, running statistics to their initial values."""
        for m in self.modules():
            if isinstance(m, nn.BatchNorm1d):
                m.reset_running_stats()
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def decoder_features(self, x: Any) -> Any:
        """Features before ``final`` (``decoder_channels`` wide: 96 for minkunet14/18/34) on the input coordinates."""
        out_p1 = self.relu(self.bn0(self.conv0p1s1(x)))
        out_b1p2 = self.block1(self.relu(self.bn1(self.conv1p1s2(out_p1))))
        out_b2p4 = self.block2(self.relu(self.bn2(self.conv2p2s2(out_b1p2))))
        out_b3p8 = self.block3(self.relu(self.bn3(self.conv3p4s2(out_b2p4))))
        out = self.block4(self.relu(self.bn4(self.conv4p8s2(out_b3p8))))

        out = self.relu(self.bntr4(self.convtr4p16s2(out)))
        out = self.block5(self._ops.cat(out, out_b3p8))
        out = self.relu(self.bntr5(self.convtr5p8s2(out)))
        out = self.block6(self._ops.cat(out, out_b2p4))
        out = self.relu(self.bntr6(self.convtr6p4s2(out)))
        out = self.block7(self._ops.cat(out, out_b1p2))
        out = self.relu(self.bntr7(self.convtr7p2s2(out)))
        return self.block8(self._ops.cat(out, out_p1))

    def forward(self, x: Any) -> Any:
        """Output of ``final`` ((M, out_channels) features) on the input coordinates (stride 1)."""
        return self.final(self.decoder_features(x))

    def conv_bn_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """Every ``(convolution, BatchNorm)`` pair where the convolution's output goes only into that BatchNorm
        (stem, encoder, decoder, residual blocks, ``downsample``): what eval-mode inference may fold
        (:func:`largead.sparse.inference.fused_inference`)."""
        pairs: list[tuple[nn.Module, nn.Module]] = [
            (self.conv0p1s1, self.bn0), (self.conv1p1s2, self.bn1), (self.conv2p2s2, self.bn2),
            (self.conv3p4s2, self.bn3), (self.conv4p8s2, self.bn4), (self.convtr4p16s2, self.bntr4),
            (self.convtr5p8s2, self.bntr5), (self.convtr6p4s2, self.bntr6), (self.convtr7p2s2, self.bntr7)]
        for m in self.modules():
            if isinstance(m, (BasicBlock, Bottleneck)):
                pairs += [(m.conv1, m.norm1), (m.conv2, m.norm2)]
                if isinstance(m, Bottleneck):
                    pairs.append((m.conv3, m.norm3))
                if m.downsample is not None:
                    pairs.append((m.downsample[0], m.downsample[1]))
        return pairs


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameter elements of ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def state_dict_shapes(module: nn.Module) -> dict[str, tuple[int, ...]]:
    """``{key: shape}`` of ``module.state_dict()`` in order."""
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


__all__ = [
    "MINKUNET_VARIANTS",
    "TORCH_OPS",
    "BasicBlock",
    "Bottleneck",
    "MinkUNet",
    "MinkUNetSpec",
    "SparseOps",
    "TorchOps",
    "count_parameters",
    "get_spec",
    "state_dict_shapes",
]
