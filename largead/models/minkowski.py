"""Optional MinkowskiEngine backend: the same MinkUNet built from MinkowskiEngine 0.5.4 layers.

:class:`MinkowskiOps` plugs into :class:`~largead.models.minkunet.MinkUNet`, so the network definition is shared and
the parameter names and shapes are identical to the ``largead.sparse`` build (state dicts load either way). Used as
``LargeADConfig(backend="minkowski")``, by :func:`minkowski_twin`, by the equivalence tests and the benchmark.

MinkowskiEngine has no wheels; ``bash scripts/install_minkowski.sh [PYTHON]`` builds a CPU-only one (cached). It is
imported only when this backend is used.
"""

from __future__ import annotations

import importlib
import warnings
from functools import lru_cache
from types import ModuleType
from typing import Any

import torch
from torch import nn

from largead.models.minkunet import MinkUNet

INSTALL_HINT = "MinkowskiEngine not installed: run scripts/install_minkowski.sh"


def import_minkowski() -> ModuleType:
    """Import MinkowskiEngine or raise ImportError telling how to install it."""
    try:
        with warnings.catch_warnings():  # ME warns on every import of a CPU-only build; that is the expected build
            warnings.filterwarnings("ignore", message="The MinkowskiEngine was compiled with CPU_ONLY",
                                    category=UserWarning)
            return importlib.import_module("MinkowskiEngine")
    except ImportError as err:
        raise ImportError(f"{INSTALL_HINT} (bash scripts/install_minkowski.sh [PYTHON] builds MinkowskiEngine 0.5.4 "
                          f"CPU-only and caches the wheel; import failed with: {err})") from err


def minkowski_available() -> bool:
    """Whether MinkowskiEngine imports in this environment."""
    try:
        import_minkowski()
    except ImportError:
        return False
    return True


class MinkowskiOps:
    """MinkowskiEngine layers (dimension 3) with the parameter layout ``largead.sparse`` mirrors."""

    name = "minkowski"

    def __init__(self) -> None:
        self.ME = import_minkowski()

    def conv(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
             bias: bool = False) -> nn.Module:
        return self.ME.MinkowskiConvolution(in_channels, out_channels, kernel_size=kernel_size, stride=stride,
                                            bias=bias, dimension=3)

    def conv_transpose(self, in_channels: int, out_channels: int) -> nn.Module:
        return self.ME.MinkowskiConvolutionTranspose(in_channels, out_channels, kernel_size=2, stride=2, dimension=3)

    def batch_norm(self, channels: int, momentum: float) -> nn.Module:
        return self.ME.MinkowskiBatchNorm(channels, momentum=momentum)

    def relu(self) -> nn.Module:
        return self.ME.MinkowskiReLU()

    def cat(self, a: Any, b: Any) -> Any:
        return self.ME.cat(a, b)

    def add(self, a: Any, b: Any) -> Any:
        return a + b

    def sparse_input(self, coords: torch.Tensor, feats: torch.Tensor) -> Any:
        """An ME SparseTensor on a fresh coordinate manager; ``coords`` must be unique (M, 4) (batch, x, y, z)."""
        return self.ME.SparseTensor(
            features=feats, coordinates=coords.to(torch.int32).contiguous(),
            quantization_mode=self.ME.SparseTensorQuantizationMode.RANDOM_SUBSAMPLE, device=str(feats.device))

    def output_features(self, out: Any, inp: Any) -> torch.Tensor:
        """Rows of ``out`` (on the input's coordinate map) back in the order of the coordinates given to
        :meth:`sparse_input` (ME may reorder them when it builds the map)."""
        if out.coordinate_map_key != inp.coordinate_map_key:
            raise ValueError("network output is not on the input coordinate map")
        return out.F[inp.inverse_mapping.long()]


@lru_cache(maxsize=1)
def minkowski_ops() -> MinkowskiOps:
    """The shared :class:`MinkowskiOps` (imports MinkowskiEngine on first call)."""
    return MinkowskiOps()


def minkowski_twin(net: MinkUNet) -> MinkUNet:
    """A MinkowskiEngine-built copy of ``net`` (same variant, channels, BN momenta) holding a copy of its state.

    The copy is on ``net``'s device and in ``net``'s train/eval mode.
    """
    bn = [m for m in net.modules() if isinstance(m, nn.BatchNorm1d)]
    twin = MinkUNet(net.in_channels, net.out_channels, net.variant, bn_momentum=net.bn0.bn.momentum,
                    ops=minkowski_ops())
    for mine, theirs in zip(bn, (m for m in twin.modules() if isinstance(m, nn.BatchNorm1d))):
        theirs.momentum = mine.momentum
    twin.load_state_dict(net.state_dict(), strict=True)
    param = next(net.parameters())
    return twin.to(device=param.device, dtype=param.dtype).train(net.training)


__all__ = [
    "INSTALL_HINT",
    "MinkowskiOps",
    "import_minkowski",
    "minkowski_available",
    "minkowski_ops",
    "minkowski_twin",
]
